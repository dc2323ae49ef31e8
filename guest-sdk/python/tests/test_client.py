"""The worker's client: server URLs and TLS settings, checked before
anything is sent."""

import pytest

from cerebelum.errors import CerebelumError
from cerebelum.client import Client, parse_server, server_target


def test_server_urls_give_the_target_and_whether_tls():
    assert parse_server("http://127.0.0.1:7433") == ("127.0.0.1:7433", False)
    assert parse_server("127.0.0.1:7433") == ("127.0.0.1:7433", False)
    assert parse_server("https://api.example.com:8443/x") == ("api.example.com:8443", True)
    assert parse_server("HTTPS://api.example.com") == ("api.example.com:443", True)
    assert parse_server("https://[::1]:9") == ("[::1]:9", True)
    assert server_target("http://h") == "h:80"
    for bad in ("ftp://h:1", "http://:1", "http://h:port"):
        with pytest.raises(CerebelumError):
            parse_server(bad)


def test_tls_settings_need_an_https_server_and_go_in_pairs(monkeypatch, tmp_path):
    for name in ("CEREBELUM_CA_CERT", "CEREBELUM_CLIENT_CERT", "CEREBELUM_CLIENT_KEY"):
        monkeypatch.delenv(name, raising=False)
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(CerebelumError, match="not https://"):
        Client("http://127.0.0.1:1", "k", ca_cert=str(ca))
    with pytest.raises(CerebelumError, match="go together"):
        Client("https://127.0.0.1:1", "k", client_cert=str(ca))
    client = Client("https://127.0.0.1:1", "k", ca_cert=str(ca))
    assert client.tls and client.target == "127.0.0.1:1"
    monkeypatch.setenv("CEREBELUM_CA_CERT", str(ca))
    with pytest.raises(CerebelumError, match="not https://"):
        Client("http://127.0.0.1:1", "k")
