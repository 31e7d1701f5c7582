"""`domain`: the stored samples column, the query macro and takedown --domains agree with urllib."""

from __future__ import annotations

from urllib.parse import urlsplit

import duckdb
import pyarrow as pa

from laionface.audit.query import MACROS
from laionface.domains import domain, domains

URLS = [
    "https://www.Example.com/a.jpg", "http://cdn.example.com:8080/x?y=1", "https://user:pw@img.example.org/p#frag",
    "http://WWW.SHOP.co.uk", "https://example.com?q=/a", "http://[2001:db8::1]:80/i.png", "ftp://files.example.net/f",
    "https://www.example.com.", "not a url", "", "//no-scheme.com/x", "https:///nohost", None, "http://例え.jp/画像.jpg",
]


def reference(url: str | None) -> str | None:
    if not url or "://" not in url:
        return None
    host = urlsplit(url).netloc.rpartition("@")[2]
    host = host.partition("]")[0] + "]" if host.startswith("[") else host.split(":")[0]
    host = host.lower()
    host = host[4:] if host.startswith("www.") else host
    return host or None


def test_domains_match_urllib_and_the_query_macro():
    got = domains(pa.array(URLS, pa.string())).to_pylist()
    assert got == [reference(u) for u in URLS]
    assert got[0] == "example.com" and got[2] == "img.example.org" and got[5] == "[2001:db8::1]"
    assert [domain(u) for u in URLS] == got

    con = duckdb.connect()
    for sig, body in MACROS.items():
        con.execute(f"CREATE MACRO {sig} AS {body}")
    con.register("t", pa.table({"URL": pa.array(URLS, pa.string())}))
    macro = [r[0] for r in con.execute("SELECT domain_of(URL) FROM t").fetchall()]
    assert macro == got


def test_empty_and_chunked_input():
    assert domains(pa.array([], pa.string())).to_pylist() == []
    chunked = pa.chunked_array([["http://a.com/x"], ["https://www.b.org"]])
    assert domains(chunked).to_pylist() == ["a.com", "b.org"]
