"""laionface: rebuild LAION-FACE and LAION-FACE-cropped with auditable manifests."""

__version__ = "0.1.0"
