from __future__ import annotations

from pathlib import Path

import pytest

from mirror.config import Secret, load_settings, parse_size
from mirror.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_loads_and_matches_defaults(tmp_path: Path) -> None:
    s = load_settings(ROOT / "config.example.toml", {"MIRROR_HOME": str(tmp_path)})
    assert s.home == tmp_path
    assert s.ngc.api_url == "https://api.ngc.nvidia.com"
    assert s.http.retries == 5 and s.http.concurrency == 4
    assert s.ngc.api_key is None
    assert [sel.pattern for sel in s.select] == ["nvidia/tao/*"]
    assert s.select[0].max_size == 10 * 2**30


def test_every_settings_field_is_documented_in_the_example() -> None:
    from dataclasses import fields

    from mirror.config import BundleSettings, HttpSettings, NgcSettings

    text = (ROOT / "config.example.toml").read_text()
    for cls in (NgcSettings, HttpSettings, BundleSettings):
        for f in fields(cls):
            assert f"\n{f.name} =" in text, f"{cls.__name__}.{f.name} missing from example"


def test_unknown_key_names_section_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[http]\nretrys = 3\n")
    with pytest.raises(ConfigError, match=r"\[http\]\.retrys"):
        load_settings(cfg, {})


def test_env_overrides_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[http]\nconcurrency = 2\n")
    s = load_settings(cfg, {"MIRROR_HTTP_CONCURRENCY": "8", "MIRROR_HOME": str(tmp_path)})
    assert s.http.concurrency == 8


def test_plain_http_refused_for_remote_hosts(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[ngc]\napi_url = "http://ngc.example.com"\n')
    with pytest.raises(ConfigError, match="loopback"):
        load_settings(cfg, {})
    cfg.write_text('[ngc]\napi_url = "http://127.0.0.1:8080/"\n')
    assert load_settings(cfg, {}).ngc.api_url == "http://127.0.0.1:8080"


def test_api_key_from_env_is_secret(tmp_path: Path) -> None:
    s = load_settings(None, {"NGC_API_KEY": "sekrit-123", "MIRROR_HOME": str(tmp_path)})
    assert isinstance(s.ngc.api_key, Secret)
    assert s.ngc.api_key.reveal() == "sekrit-123"
    assert "sekrit-123" not in repr(s)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[ngc\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad, {})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", {})


def test_select_validation(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[select]]\npattern = "nvidia/*"\nkinds = ["movie"]\n')
    with pytest.raises(ConfigError, match="unknown kind"):
        load_settings(cfg, {})
    cfg.write_text('[[select]]\npattern = "nvidia/*"\nlatest = 0\n')
    assert load_settings(cfg, {}).select[0].latest is None  # 0 = all versions


@pytest.mark.parametrize(
    "text,expected",
    [("4GiB", 4 * 2**30), ("256MiB", 256 * 2**20), ("10GB", 10**10), (1024, 1024), ("7", 7)],
)
def test_parse_size(text: object, expected: int) -> None:
    assert parse_size(text) == expected


def test_parse_size_rejects_garbage() -> None:
    with pytest.raises(ConfigError):
        parse_size("lots")


@pytest.mark.parametrize("name", ["lab", "nvidia", "a/b.c", ""])
def test_a_registry_name_must_look_like_a_registry_host(tmp_path: Path, name: str) -> None:
    """index.json names tags <name>/<repo>:<tag>; by Docker's rule "lab/x" is a namespace on
    docker.io, so such a name would be published under another registry's prefix."""
    cfg = tmp_path / "m.toml"
    table = f'[[registry]]\nurl = "http://127.0.0.1:5000"\nrepositories = ["x"]\nname = "{name}"\n'
    cfg.write_text(table)
    if name == "":  # empty: the URL's host:port is the name
        assert load_settings(cfg, {}).registries[0].name == "127.0.0.1:5000"
        return
    with pytest.raises(ConfigError, match="does not look like a registry host"):
        load_settings(cfg, {})
    for good in ("lab.example", "lab:5000", "localhost"):
        cfg.write_text(table.replace(f'name = "{name}"', f'name = "{good}"'))
        assert load_settings(cfg, {}).registries[0].name == good
