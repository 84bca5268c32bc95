"""The Dask executor's config: TLS files are found relative to the config file, like every other path."""

from __future__ import annotations

from pathlib import Path

from chute.config_check import load_config


def test_tls_files_are_relative_to_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "chute.yaml"
    config.parent.mkdir()
    config.write_text(
        "executor:\n  kind: dask\n  address: tls://10.0.0.10:8786\n"
        "  security: {ca_file: tls/ca.pem, cert: tls/chute.pem, key: /keys/chute.key}\n"
    )
    security = load_config(config)[0].executor.security
    assert (security.ca_file, security.cert, security.key) == (
        tmp_path / "etc" / "tls" / "ca.pem",
        tmp_path / "etc" / "tls" / "chute.pem",
        Path("/keys/chute.key"),
    )
