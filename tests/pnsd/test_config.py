"""pnsd.config: lookup order, home precedence, defaults, PTS tables, key file, home dirs."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from pnsd.config import (
    GIB,
    KIB,
    MIB,
    Settings,
    config_search_path,
    ensure_home,
    find_config,
    load_settings,
)
from pnsd.errors import ConfigError
from pnsd.keyfile import load_or_create_key
from pnsd.spec import Mode

DEMO = """
[pts.echo]
mode = "inproc"
entry = "pnsd.demo:echo"
version = "demo"

[pts.hello]
mode = "process"
run = ["runPTS"]
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment whose $HOME is a temporary dir, so the real home is never read."""
    user_home = tmp_path / "user"
    user_home.mkdir()
    return {"HOME": str(user_home)}


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    path = tmp_path / "demo.toml"
    path.write_text(DEMO)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(env: dict[str, str], demo: Path, **kwargs: object) -> Settings:
    return load_settings(env=env, demo_specs=demo, **kwargs)  # type: ignore[arg-type]


# --- lookup order ---------------------------------------------------------------------------


def test_search_path_is_pns_config_then_user_then_system(env: dict[str, str]) -> None:
    env["PNS_CONFIG"] = "/somewhere/pnsd.toml"
    assert config_search_path(env) == [
        Path("/somewhere/pnsd.toml"),
        Path(env["HOME"]) / ".config/pns/pnsd.toml",
        Path("/etc/pns/pnsd.toml"),
    ]


def test_explicit_config_wins_over_pns_config(tmp_path: Path, env: dict[str, str]) -> None:
    chosen = write(tmp_path / "a.toml", "")
    env["PNS_CONFIG"] = str(write(tmp_path / "b.toml", ""))
    assert find_config(chosen, env) == chosen


def test_pns_config_wins_over_user_config(tmp_path: Path, env: dict[str, str]) -> None:
    write(Path(env["HOME"]) / ".config/pns/pnsd.toml", "")
    env["PNS_CONFIG"] = str(write(tmp_path / "b.toml", ""))
    assert find_config(None, env) == tmp_path / "b.toml"


def test_user_config_is_found_when_nothing_explicit(env: dict[str, str]) -> None:
    user = write(Path(env["HOME"]) / ".config/pns/pnsd.toml", "")
    assert find_config(None, env) == user


def test_missing_explicit_config_is_an_error(tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        find_config(tmp_path / "nope.toml", env)


def test_missing_pns_config_is_an_error(tmp_path: Path, env: dict[str, str]) -> None:
    env["PNS_CONFIG"] = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_settings(env=env)


# --- home and defaults ----------------------------------------------------------------------


def test_defaults_live_under_home(tmp_path: Path, env: dict[str, str], demo: Path) -> None:
    settings = load(env, demo, home=tmp_path / "h")
    home = tmp_path / "h"
    assert settings.home == home
    assert settings.endpoint == f"ipc://{home}/run/pnsd.sock"
    assert settings.tcp_endpoint is None
    assert settings.key_file == home / "secret.key"
    assert settings.pidfile == home / "run" / "pnsd.pid"
    assert settings.db_path == home / "jobs.db"
    assert settings.files_dir == home / "jobs"
    assert settings.work_dir == home / "work"
    assert settings.max_message_bytes == 64 * MIB
    assert settings.max_clock_skew == 60.0
    assert settings.inline_limit == 64 * KIB
    assert settings.retention_age == 7 * 24 * 3600
    assert settings.retention_bytes == GIB
    assert settings.log_level == "info"
    assert settings.demo is True
    assert settings.source is None


def test_home_defaults_to_pns_under_user_home(env: dict[str, str], demo: Path) -> None:
    assert load(env, demo).home == Path(env["HOME"]) / "pns"


def test_home_argument_beats_env_beats_file(
    tmp_path: Path, env: dict[str, str], demo: Path
) -> None:
    config = write(tmp_path / "c.toml", '[pnsd]\nhome = "/from/file"\n')
    assert load(env, demo, config=config).home == Path("/from/file")
    env["PNS_HOME"] = "/from/env"
    assert load(env, demo, config=config).home == Path("/from/env")
    assert load(env, demo, config=config, home=Path("/from/arg")).home == Path("/from/arg")


def test_relative_home_in_file_is_relative_to_the_file(
    tmp_path: Path, env: dict[str, str], demo: Path
) -> None:
    config = write(tmp_path / "etc" / "c.toml", '[pnsd]\nhome = "state"\n')
    assert load(env, demo, config=config).home == tmp_path / "etc" / "state"


def test_relative_paths_in_file_are_relative_to_home(
    tmp_path: Path, env: dict[str, str], demo: Path
) -> None:
    config = write(tmp_path / "c.toml", """
[pnsd]
endpoint = "ipc://sock/d.sock"
db_path = "db/jobs.sqlite"
key_file = "/abs/key"
work_dir = "~/scratch"
tcp_endpoint = "tcp://127.0.0.1:7755"
retention_age = 0
retention_bytes = 0
log_level = "DEBUG"
""")
    settings = load(env, demo, config=config, home=tmp_path / "h")
    assert settings.endpoint == f"ipc://{tmp_path}/h/sock/d.sock"
    assert settings.db_path == tmp_path / "h" / "db" / "jobs.sqlite"
    assert settings.key_file == Path("/abs/key")
    assert settings.work_dir == Path(env["HOME"]) / "scratch"
    assert settings.tcp_endpoint == "tcp://127.0.0.1:7755"
    assert settings.worker_endpoint is None and settings.tcp_insecure is False
    assert settings.curve_dir == tmp_path / "h" / "curve"
    assert settings.retention_age is None
    assert settings.retention_bytes is None
    assert settings.log_level == "debug"
    assert settings.source == config


# --- PTS tables -----------------------------------------------------------------------------


def test_demo_pts_are_loaded_when_demo_is_on(env: dict[str, str], demo: Path) -> None:
    settings = load(env, demo)
    assert sorted(settings.pts) == ["echo", "hello"]
    assert settings.pts["hello"].mode is Mode.PROCESS


def test_demo_off_loads_no_demo_pts(tmp_path: Path, env: dict[str, str], demo: Path) -> None:
    config = write(tmp_path / "c.toml", "[pnsd]\ndemo = false\n")
    assert dict(load(env, demo, config=config).pts) == {}


def test_config_and_pts_d_tables_are_parsed(
    tmp_path: Path, env: dict[str, str], demo: Path
) -> None:
    home = tmp_path / "h"
    config = write(tmp_path / "c.toml", '[pts.one]\nmode = "inproc"\nentry = "m:f"\n')
    write(home / "pts.d" / "two.toml", '[pts.two]\nmode = "worker"\nentry = "m:g"\nworkers = 3\n')
    write(home / "pts.d" / "ignored.txt", "not toml at all [")
    settings = load(env, demo, config=config, home=home)
    assert sorted(settings.pts) == ["echo", "hello", "one", "two"]
    assert settings.pts["two"].workers == 3


def test_user_pts_replaces_demo_pts_of_same_name(
    tmp_path: Path, env: dict[str, str], demo: Path
) -> None:
    config = write(tmp_path / "c.toml", '[pts.echo]\nmode = "inproc"\nentry = "mine:echo"\n')
    assert load(env, demo, config=config).pts["echo"].entry == "mine:echo"


def test_pts_defined_in_two_user_files_names_both(
    tmp_path: Path, env: dict[str, str], demo: Path
) -> None:
    home = tmp_path / "h"
    table = '[pts.same]\nmode = "inproc"\nentry = "m:f"\n'
    config = write(tmp_path / "c.toml", table)
    other = write(home / "pts.d" / "x.toml", table)
    with pytest.raises(ConfigError) as caught:
        load(env, demo, config=config, home=home)
    assert str(config) in caught.value.message
    assert str(other) in caught.value.message


def test_invalid_pts_table_names_file_and_pts(
    tmp_path: Path, env: dict[str, str], demo: Path
) -> None:
    config = write(tmp_path / "c.toml", '[pts.bad]\nmode = "teleport"\n')
    with pytest.raises(ConfigError, match=r"c\.toml: \[pts\.bad\] .*mode"):
        load(env, demo, config=config)


def test_pts_d_file_may_hold_only_pts(tmp_path: Path, env: dict[str, str], demo: Path) -> None:
    write(tmp_path / "h" / "pts.d" / "x.toml", "[pnsd]\ndemo = false\n")
    with pytest.raises(ConfigError, match=r"x\.toml.*'pnsd'"):
        load(env, demo, home=tmp_path / "h")


def test_missing_demo_file_is_an_error(tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="demo"):
        load_settings(env=env, demo_specs=tmp_path / "absent.toml")


# --- bad files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("[pnsd]\nbogus = 1\n", r"c\.toml: \[pnsd\] 'bogus' is not a known key"),
        ('[pnsd]\nmax_message_bytes = "big"\n', r"'max_message_bytes' must be an integer"),
        ("[pnsd]\ndemo = 1\n", r"c\.toml: \[pnsd\] 'demo' must be true or false"),
        ("[pnsd]\nmax_clock_skew = -1\n", r"c\.toml: \[pnsd\] 'max_clock_skew' must be at least"),
        ("[pnsd]\nlog_level = \"loud\"\n", r"c\.toml: \[pnsd\] 'log_level' must be one of"),
        ("[pnsd]\nendpoint = \"tcp://0.0.0.0:1\"\n", r"'endpoint' must be an ipc://"),
        ("[pnsd]\ntcp_endpoint = \"http://x\"\n", r"'tcp_endpoint' must be a tcp://"),
        ("[pnsd]\nworker_endpoint = \"ipc://x\"\n", r"'worker_endpoint' must be a tcp://"),
        ('[pnsd]\ntcp_endpoint = "tcp://0.0.0.0:1"\ntcp_insecure = true\n',
         r"'tcp_insecure' is allowed only on loopback \(tcp_endpoint is tcp://0.0.0.0:1\)"),
        ('[pnsd]\nworker_endpoint = "tcp://10.0.0.5:1"\ntcp_insecure = true\n',
         r"'tcp_insecure' is allowed only on loopback \(worker_endpoint"),
        ("[pnsd]\nkey_file = 3\n", r"'key_file' must be a non-empty string"),
        ("pnsd = 3\n", r"c\.toml: \[pnsd\] must be a table"),
        ("[other]\n", r"c\.toml: unknown top-level key 'other'"),
        ("[pnsd]\ndemo = tru\n", r"c\.toml: bad TOML: .*line 2"),
    ],
)
def test_bad_config_names_file_and_key(
    tmp_path: Path, env: dict[str, str], demo: Path, text: str, pattern: str
) -> None:
    config = write(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError, match=pattern):
        load(env, demo, config=config)


# --- public view ----------------------------------------------------------------------------


def test_public_view_is_plain_data_without_key_material(
    tmp_path: Path, env: dict[str, str], demo: Path
) -> None:
    settings = load(env, demo, home=tmp_path / "h")
    ensure_home(settings)
    key = load_or_create_key(settings.key_file, create=True)
    view = settings.public()
    text = json.dumps(view)  # plain data: serialises without help
    assert key.decode() not in text
    assert view["key_file"] == str(settings.key_file)
    assert view["pts"]["echo"]["entry"] == "pnsd.demo:echo"


# --- key file -------------------------------------------------------------------------------


def test_key_is_created_with_mode_0600_and_64_hex_chars(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    key = load_or_create_key(path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) == 64
    assert bytes.fromhex(key.decode("ascii"))
    assert path.read_bytes() == key


def test_existing_key_is_reused(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    first = load_or_create_key(path, create=True)
    assert load_or_create_key(path, create=True) == first
    assert load_or_create_key(path, create=False) == first


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_text("k" * 64)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="644"):
        load_or_create_key(path, create=False)


def test_key_whitespace_is_stripped(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_text("  abc123\n")
    path.chmod(0o600)
    assert load_or_create_key(path, create=False) == b"abc123"


def test_empty_key_file_means_signing_off(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_text("\n")
    path.chmod(0o600)
    assert load_or_create_key(path, create=False) == b""


def test_missing_key_without_create_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_or_create_key(tmp_path / "secret.key", create=False)


# --- home directories -----------------------------------------------------------------------


def test_ensure_home_creates_dirs_and_a_private_run_dir(
    tmp_path: Path, env: dict[str, str], demo: Path
) -> None:
    settings = load(env, demo, home=tmp_path / "h")
    ensure_home(settings)
    for path in (settings.home, settings.pts_dir, settings.work_dir, settings.files_dir):
        assert path.is_dir()
    assert stat.S_IMODE(settings.run_dir.stat().st_mode) == 0o700


def test_ensure_home_tightens_an_open_run_dir(
    tmp_path: Path, env: dict[str, str], demo: Path
) -> None:
    settings = load(env, demo, home=tmp_path / "h")
    settings.run_dir.mkdir(parents=True)
    settings.run_dir.chmod(0o755)
    ensure_home(settings)
    assert stat.S_IMODE(settings.run_dir.stat().st_mode) == 0o700


def test_packaged_demo_pts_load_by_default(env: dict[str, str]) -> None:
    settings = load_settings(env=env)
    assert {"echo", "hello"} <= set(settings.pts)


def test_tcp_without_curve_is_allowed_only_on_loopback(
    tmp_path: Path, env: dict[str, str], demo: Path
) -> None:
    config = write(tmp_path / "c.toml", """
[pnsd]
tcp_endpoint = "tcp://127.0.0.1:7755"
worker_endpoint = "tcp://[::1]:7756"
tcp_insecure = true
""")
    settings = load(env, demo, config=config)
    assert settings.tcp_insecure is True
    assert settings.worker_endpoint == "tcp://[::1]:7756"


def test_a_shared_store_is_a_postgresql_url_never_shown_with_its_password(
        tmp_path: Path, env: dict[str, str], demo: Path) -> None:
    config = write(tmp_path / "c.toml", '[pnsd]\nstore = "postgresql://pns:s3cret@db/pns"\n'
                                        'node = "n1"\nlease_ttl = 3\n')
    settings = load(env, demo, config=config)
    assert (settings.store, settings.node, settings.lease_ttl) == (
        "postgresql://pns:s3cret@db/pns", "n1", 3.0)
    assert settings.public()["store"] == "postgresql://pns:***@db/pns"
    assert "s3cret" not in json.dumps(settings.public())
    write(config, '[pnsd]\nstore = "mysql://db"\n')
    with pytest.raises(ConfigError, match="postgresql://"):
        load(env, demo, config=config)


def test_the_embedded_store_is_the_default(tmp_path: Path, env: dict[str, str],
                                           demo: Path) -> None:
    settings = load(env, demo, config=write(tmp_path / "c.toml", "[pnsd]\n"))
    assert settings.store is None and settings.node
