"""Configuration: the layers, where each value came from, every mistake, and no secret shown."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from kokan.config import MASK, ConfigError, describe, load, secret_values
from tests.conftest import REPO_ROOT, run_kokan

AUTH_TOKEN = "tw-auth-TOKEN-3f9a1c"
SECRET_KEY = "flask-SECRET-key-8e2d"
DB_PASSWORD = "db-PASSWORD-77c1"
REDIS_PASSWORD = "redis-PASSWORD-51b0"
ALL_SECRETS = (AUTH_TOKEN, SECRET_KEY, DB_PASSWORD, REDIS_PASSWORD)

SECRET_ENV = {
    "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    "KOKAN_SECRET_KEY": SECRET_KEY,
    "DATABASE_URL": f"postgresql://kokan:{DB_PASSWORD}@db.example:5432/kokan",
    "REDIS_URL": f"redis://:{REDIS_PASSWORD}@redis.example:6380/2",
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, so the repository's own config.yaml is not picked up."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def config_error(**kwargs: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load(**kwargs)
    return str(caught.value)


def assert_no_secret(text: str) -> None:
    for secret in ALL_SECRETS:
        assert secret not in text


# --- layering -------------------------------------------------------------------------


def test_code_defaults_when_nothing_is_configured(workdir: Path) -> None:
    loaded = load(environ={})
    settings = loaded.settings
    assert settings.port == 8080
    assert settings.host == "127.0.0.1"
    assert settings.data_dir == Path("var")
    assert settings.redis_url is None
    assert settings.effective_database_url == f"sqlite:///{workdir / 'var' / 'kokan.db'}"
    assert loaded.sources == {}
    assert loaded.source_of(("port",)) == "default"


def test_each_layer_overrides_the_one_below_and_records_its_source(workdir: Path) -> None:
    write(
        workdir / "config.yaml",
        "port: 9001\nhost: 10.1.2.3\nlog_level: WARNING\ntwilio:\n  account_sid: AC-from-yaml\n",
    )
    environ = {"KOKAN_PORT": "9002", "KOKAN_LOG_LEVEL": "ERROR"}

    from_file = load(environ={})
    assert from_file.settings.port == 9001
    assert from_file.source_of(("port",)) == "config.yaml:1"
    assert from_file.source_of(("twilio", "account_sid")) == "config.yaml:5"

    from_env = load(environ=environ)
    assert from_env.settings.port == 9002
    assert from_env.settings.log_level == "ERROR"
    assert from_env.settings.host == "10.1.2.3"  # still from the file
    assert from_env.source_of(("port",)) == "environment KOKAN_PORT"
    assert from_env.source_of(("host",)) == "config.yaml:2"
    assert from_env.source_of(("web_workers",)) == "default"

    from_option = load(environ=environ, overrides={"port": 9003, "host": None})
    assert from_option.settings.port == 9003
    assert from_option.source_of(("port",)) == "command-line option --port"
    # an option left unset (None) does not hide the layers below it
    assert from_option.settings.host == "10.1.2.3"
    assert from_option.source_of(("host",)) == "config.yaml:2"


def test_well_known_environment_names(workdir: Path) -> None:
    loaded = load(
        environ={
            "DATABASE_URL": "postgresql://kokan@db.example/kokan",
            "REDIS_URL": "redis://redis.example:6380/3",
            "TWILIO_ACCOUNT_SID": "AC123",
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "KOKAN_PUBLIC_URL": "https://kokan.example/",
            "KOKAN_DATA_DIR": "/srv/kokan",
            "KOKAN_WEB_WORKERS": "4",
            "HOME": "/root",  # not Kokan's: ignored
            "KOKAN_CONFIG": "",  # empty: no file named
        }
    )
    settings = loaded.settings
    assert settings.database_url == "postgresql://kokan@db.example/kokan"
    assert settings.effective_database_url == "postgresql://kokan@db.example/kokan"
    assert settings.redis_url == "redis://redis.example:6380/3"
    assert settings.twilio.account_sid == "AC123"
    assert settings.twilio.auth_token is not None
    assert settings.twilio.auth_token.get_secret_value() == AUTH_TOKEN
    assert settings.public_url == "https://kokan.example"  # trailing slash dropped
    assert settings.data_dir == Path("/srv/kokan")
    assert settings.web_workers == 4
    assert loaded.source_of(("twilio", "auth_token")) == "environment TWILIO_AUTH_TOKEN"
    assert loaded.source_of(("public_url",)) == "environment KOKAN_PUBLIC_URL"


def test_sections_merge_across_layers(workdir: Path) -> None:
    config = write(workdir / "kokan.yaml", "twilio:\n  account_sid: AC-file\n")
    loaded = load(config_file=config, environ={"TWILIO_AUTH_TOKEN": AUTH_TOKEN})
    assert loaded.settings.twilio.account_sid == "AC-file"
    assert loaded.settings.twilio.auth_token is not None
    assert loaded.source_of(("twilio", "account_sid")) == f"{config}:2"

    nested = load(config_file=config, environ={"KOKAN_TWILIO__ACCOUNT_SID": "AC-env"})
    assert nested.settings.twilio.account_sid == "AC-env"
    assert nested.source_of(("twilio", "account_sid")) == "environment KOKAN_TWILIO__ACCOUNT_SID"

    option = load(config_file=config, environ={}, overrides={"twilio.account_sid": "AC-opt"})
    assert option.settings.twilio.account_sid == "AC-opt"


def test_config_file_named_by_option_or_environment(workdir: Path) -> None:
    write(workdir / "config.yaml", "port: 9001\n")
    by_env = write(workdir / "by-env.yaml", "port: 9002\n")
    by_option = write(workdir / "by-option.yaml", "port: 9003\n")

    assert load(environ={"KOKAN_CONFIG": str(by_env)}).settings.port == 9002
    chosen = load(config_file=by_option, environ={"KOKAN_CONFIG": str(by_env)})
    assert chosen.settings.port == 9003
    assert chosen.source_of(("port",)) == f"{by_option}:1"


def test_empty_file_and_empty_section_mean_defaults(workdir: Path) -> None:
    empty = write(workdir / "empty.yaml", "")
    assert load(config_file=empty, environ={}).settings.port == 8080
    comments = write(workdir / "comments.yaml", "# nothing set yet\n")
    assert load(config_file=comments, environ={}).settings.port == 8080
    # every key of a section commented out leaves `twilio:` empty; an env value still merges
    section = write(workdir / "section.yaml", "twilio:\n  # account_sid: AC...\n")
    loaded = load(config_file=section, environ={"TWILIO_ACCOUNT_SID": "AC9"})
    assert loaded.settings.twilio.account_sid == "AC9"


def test_the_shipped_config_yaml_loads_and_holds_no_secret() -> None:
    loaded = load(config_file=REPO_ROOT / "config.yaml", environ={})
    assert loaded.settings.secret_key is None
    assert loaded.settings.twilio.auth_token is None
    assert loaded.settings.database_url is None
    assert loaded.source_of(("port",)).startswith(f"{REPO_ROOT / 'config.yaml'}:")


def test_unicode_values_are_kept(workdir: Path) -> None:
    config = write(
        workdir / "config.yaml", "host: 東京.example\ntwilio:\n  account_sid: 'AC-ü-交換'\n"
    )
    loaded = load(config_file=config, environ={})
    assert loaded.settings.host == "東京.example"
    assert loaded.settings.twilio.account_sid == "AC-ü-交換"
    assert "host: 東京.example  # " in "\n".join(describe(loaded))


def test_log_level_in_any_case(workdir: Path) -> None:
    assert load(environ={"KOKAN_LOG_LEVEL": "debug"}).settings.log_level == "DEBUG"


# --- mistakes: each names the key and where it came from ------------------------------


def test_yaml_syntax_error_gives_file_line_and_column(workdir: Path) -> None:
    config = write(workdir / "config.yaml", "host: 127.0.0.1\nport: 8080\n  bad: indent\n")
    message = config_error(config_file=config, environ={})
    assert message.startswith(f"{config}:3:6: YAML syntax error: ")
    assert "mapping values are not allowed" in message


def test_yaml_refuses_python_tags(workdir: Path) -> None:
    config = write(workdir / "config.yaml", "host: !!python/object/apply:os.getcwd []\n")
    assert config_error(config_file=config, environ={}).startswith(f"{config}:1:7: YAML syntax")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host: h\nport: eighty\n", "port: Input should be a valid integer"),
        ("web_workers: 2.5\n", "web_workers: Input should be a valid integer"),
        ("port: true\n", "port: must be a whole number, not true/false"),
        ("data_dir: [a, b]\n", "data_dir: Input is not a valid path"),
        ("log_level: LOUD\n", "log_level: Input should be 'DEBUG'"),
        ("host: '   '\n", "host: must not be empty"),
        ("port: 八〇\n", "port: Input should be a valid integer, unable to parse string"),
    ],
)
def test_wrong_type_in_yaml_names_key_and_line(workdir: Path, text: str, expected: str) -> None:
    config = write(workdir / "config.yaml", text)
    line = len(text.splitlines())
    message = config_error(config_file=config, environ={})
    assert message.startswith(expected)
    assert message.endswith(f"(from {config}:{line})")


def test_wrong_type_in_environment_names_the_variable(workdir: Path) -> None:
    message = config_error(environ={"KOKAN_WEB_WORKERS": "many"})
    assert message.startswith("web_workers: Input should be a valid integer")
    assert "got 'many'" in message
    assert message.endswith("(from environment KOKAN_WEB_WORKERS)")


def test_environment_beats_a_bad_file_value_only_when_it_is_set(workdir: Path) -> None:
    write(workdir / "config.yaml", "port: eighty\n")
    assert load(environ={"KOKAN_PORT": "8081"}).settings.port == 8081
    assert config_error(environ={}).endswith("(from config.yaml:1)")


def test_unknown_key_in_yaml_top_level_and_nested(workdir: Path) -> None:
    top = write(workdir / "top.yaml", "port: 8080\nprot: 8081\n")
    assert config_error(config_file=top, environ={}) == f"prot: unknown setting (from {top}:2)"

    nested = write(workdir / "nested.yaml", "twilio:\n  account_sid: AC1\n  auth_tokn: x\n")
    assert (
        config_error(config_file=nested, environ={})
        == f"twilio.auth_tokn: unknown setting (from {nested}:3)"
    )

    unicode_key = write(workdir / "unicode.yaml", "ポート: 1\n")
    assert (
        config_error(config_file=unicode_key, environ={})
        == f"ポート: unknown setting (from {unicode_key}:1)"
    )


@pytest.mark.parametrize("name", ["KOKAN_PROT", "KOKAN_TWILIO__AUTH_TOKN", "KOKAN_TWILIO"])
def test_unknown_kokan_environment_variable(workdir: Path, name: str) -> None:
    assert config_error(environ={name: "1"}) == f"{name}: unknown setting (from environment)"


def test_section_that_is_not_a_mapping(workdir: Path) -> None:
    config = write(workdir / "config.yaml", "port: 8080\ntwilio: 5\n")
    message = config_error(config_file=config, environ={"TWILIO_AUTH_TOKEN": AUTH_TOKEN})
    assert message == f"twilio: must be a mapping of settings (from {config}:2)"


def test_file_that_is_a_list_not_a_mapping(workdir: Path) -> None:
    config = write(workdir / "config.yaml", "- port: 8080\n- host: h\n")
    message = config_error(config_file=config, environ={})
    assert message == f"{config}:1: the config file must be a mapping of settings"


def test_named_config_file_that_does_not_exist(workdir: Path) -> None:
    missing = workdir / "nowhere.yaml"
    expected = f"{missing}: the config file does not exist"
    assert config_error(config_file=missing, environ={}) == expected
    assert config_error(environ={"KOKAN_CONFIG": str(missing)}) == expected


def test_config_file_that_is_a_folder(workdir: Path) -> None:
    message = config_error(config_file=workdir, environ={})
    assert message.startswith(f"{workdir}: cannot read the config file")


def test_config_file_that_is_not_utf8(workdir: Path) -> None:
    config = workdir / "config.yaml"
    config.write_bytes("host: café\n".encode("latin-1"))
    assert (
        config_error(config_file=config, environ={})
        == f"{config}: the config file is not UTF-8 text"
    )


@pytest.mark.parametrize(
    "value", ["ftp://kokan.example", "kokan.example", "https://", "https://kokan.example:http"]
)
def test_bad_public_url(workdir: Path, value: str) -> None:
    message = config_error(environ={"KOKAN_PUBLIC_URL": value})
    assert message.startswith("public_url: ")
    assert message.endswith("(from environment KOKAN_PUBLIC_URL)")


def test_bad_public_url_in_yaml(workdir: Path) -> None:
    config = write(workdir / "config.yaml", "public_url: kokan.example\n")
    assert config_error(config_file=config, environ={}) == (
        f"public_url: must be an http:// or https:// URL, got 'kokan.example' (from {config}:1)"
    )


@pytest.mark.parametrize(
    "value",
    [
        "http://localhost:6379",
        "localhost:6379",
        "redis://localhost:99999/0",
        "redis://localhost:6379/abc",  # redis-py would quietly use database 0
        "redis://localhost:6379/\uff11",  # a full-width digit
        "unix:///run/redis.sock?db=x",
    ],
)
def test_bad_redis_url(workdir: Path, value: str) -> None:
    message = config_error(environ={"REDIS_URL": value})
    assert message.startswith("redis_url: ")
    assert message.endswith("(from environment REDIS_URL)")


def test_redis_url_schemes_accepted(workdir: Path) -> None:
    for url in (
        "redis://h:6380/1",
        "redis://h:6380",
        "rediss://h/0",
        "unix:///run/redis.sock",
        "unix:///run/redis.sock?db=2",
    ):
        assert load(environ={"REDIS_URL": url}).settings.redis_url == url


def test_bad_database_url(workdir: Path) -> None:
    message = config_error(environ={"DATABASE_URL": "postgresql://kokan@db:notaport/kokan"})
    assert message.startswith("database_url: not a database URL")
    assert message.endswith("(from environment DATABASE_URL)")


@pytest.mark.parametrize(
    ("layer", "value", "source"),
    [
        ("yaml", "0", "{config}:1"),
        ("yaml", "65536", "{config}:1"),
        ("env", "-1", "environment KOKAN_PORT"),
        ("env", "70000", "environment KOKAN_PORT"),
        ("option", 99999, "command-line option --port"),
    ],
)
def test_port_out_of_range(workdir: Path, layer: str, value: Any, source: str) -> None:
    config = write(workdir / "config.yaml", f"port: {value}\n" if layer == "yaml" else "")
    kwargs: dict[str, Any] = {"config_file": config, "environ": {}}
    if layer == "env":
        kwargs["environ"] = {"KOKAN_PORT": value}
    if layer == "option":
        kwargs["overrides"] = {"port": value}
    message = config_error(**kwargs)
    assert message.startswith("port: Input should be ")
    assert message.endswith(f"(from {source.format(config=config)})")


def test_port_range_boundaries(workdir: Path) -> None:
    assert load(environ={"KOKAN_PORT": "1"}).settings.port == 1
    assert load(environ={"KOKAN_PORT": "65535"}).settings.port == 65535


# --- secrets --------------------------------------------------------------------------


def test_secrets_never_in_error_messages(workdir: Path) -> None:
    messages = [
        # an unrelated mistake while every secret is set
        config_error(environ={**SECRET_ENV, "KOKAN_PORT": "x"}),
        # the secret itself is the bad value
        config_error(environ={}, overrides={"secret_key": [SECRET_KEY]}),
        config_error(environ={}, overrides={"twilio": AUTH_TOKEN}),
        config_error(environ={}, overrides={"twilio.auth_token": {"v": AUTH_TOKEN}}),
        # a password inside a URL that fails validation
        config_error(environ={"DATABASE_URL": f"postgresql://k:{DB_PASSWORD}@db:bad/k"}),
        config_error(environ={"REDIS_URL": f"http://:{REDIS_PASSWORD}@redis.example/0"}),
        config_error(environ={"REDIS_URL": f"redis://:{REDIS_PASSWORD}@redis.example:1e9/0"}),
    ]
    for message in messages:
        assert_no_secret(message)
    assert messages[0].endswith("(from environment KOKAN_PORT)")
    assert messages[4].startswith("database_url: ")
    assert f"postgresql://k:{MASK}@db:bad/k" in messages[4]
    assert f"http://:{MASK}@redis.example/0" in messages[5]


def test_describe_masks_secrets_and_names_sources(workdir: Path) -> None:
    write(workdir / "config.yaml", "port: 9001\n")
    loaded = load(environ={**SECRET_ENV, "TWILIO_ACCOUNT_SID": "AC-visible"})
    text = "\n".join(describe(loaded))
    assert_no_secret(text)
    assert f"twilio.auth_token: '{MASK}'  # environment TWILIO_AUTH_TOKEN" in text
    assert f"secret_key: '{MASK}'  # environment KOKAN_SECRET_KEY" in text
    assert f"postgresql://kokan:{MASK}@db.example:5432/kokan  # environment DATABASE_URL" in text
    assert f"redis://:{MASK}@redis.example:6380/2  # environment REDIS_URL" in text
    assert "twilio.account_sid: AC-visible  # environment TWILIO_ACCOUNT_SID" in text
    assert "port: 9001  # config.yaml:1" in text
    assert "host: 127.0.0.1  # default" in text


def test_secret_values_lists_what_logs_must_scrub(workdir: Path) -> None:
    environ = {**SECRET_ENV, "DATABASE_URL": "postgresql://k:p%40ss-word@db/k"}
    values = secret_values(load(environ=environ).settings)
    assert {AUTH_TOKEN, SECRET_KEY, REDIS_PASSWORD, "p%40ss-word", "p@ss-word"} <= set(values)
    assert secret_values(load(environ={}).settings) == []


# --- through the real command line ----------------------------------------------------


def _run_all(*calls: tuple[tuple[str, ...], dict[str, str], Path]) -> list[Any]:
    """Independent CLI runs side by side: each pays Python's start-up, not the others' too."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(run_kokan, *args, env=env, cwd=cwd) for args, env, cwd in calls]
        return [future.result() for future in futures]


def _assert_one_line_failure(result: Any) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kokan: ")
    return str(lines[0])


def test_config_show_and_config_errors_through_the_cli(tmp_path: Path) -> None:
    good, broken = tmp_path / "good", tmp_path / "broken"
    good.mkdir()
    broken.mkdir()
    write(good / "config.yaml", "port: 9001\n")
    write(broken / "config.yaml", "host: 127.0.0.1\nport: [8080\nlog_level: INFO\n")
    typed = write(tmp_path / "typed.yaml", "host: 127.0.0.1\ntwilio:\n  auth_tokn: x\n")
    missing = tmp_path / "none.yaml"

    show, syntax, unknown, not_there, bad_url = _run_all(
        (("config", "show"), SECRET_ENV, good),
        (("config", "show"), SECRET_ENV, broken),
        (("--config", str(typed), "config", "show"), SECRET_ENV, good),
        (("--config", str(missing), "config", "show"), {}, good),
        (("config", "show"), {"REDIS_URL": f"http://:{REDIS_PASSWORD}@redis.example/0"}, good),
    )

    assert show.returncode == 0, show.stderr
    assert_no_secret(show.stdout + show.stderr)
    assert "port: 9001  # config.yaml:1" in show.stdout
    assert f"twilio.auth_token: '{MASK}'  # environment TWILIO_AUTH_TOKEN" in show.stdout
    assert f"kokan:{MASK}@db.example" in show.stdout

    assert _assert_one_line_failure(syntax) == (
        "kokan: config.yaml:3:10: YAML syntax error: expected ',' or ']', but got ':'"
    )
    assert _assert_one_line_failure(unknown) == (
        f"kokan: twilio.auth_tokn: unknown setting (from {typed}:3)"
    )
    assert _assert_one_line_failure(not_there) == (
        f"kokan: {missing}: the config file does not exist"
    )
    assert _assert_one_line_failure(bad_url).startswith("kokan: redis_url: must start with")
    for result in (syntax, unknown, not_there, bad_url):
        assert_no_secret(result.stdout + result.stderr)


def test_the_browser_phone_key_comes_from_twilios_own_environment_names(workdir: Path) -> None:
    key_sid = "SK" + "a" * 32
    settings = load(
        environ={"TWILIO_API_KEY": key_sid, "TWILIO_API_SECRET": "key secret value"}
    ).settings
    assert settings.twilio.api_key_sid == key_sid
    assert settings.twilio.api_key_secret is not None
    assert settings.twilio.api_key_secret.get_secret_value() == "key secret value"
    assert "api_key_sid" in config_error(environ={"TWILIO_API_KEY": "not-a-key"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("wrapup_codes: {'bad code': x}\n", "wrapup_codes: wrap-up code name"),
        ("wrapup_codes: {done: '  '}\n", "wrapup_codes: done: a label is 1 to 80"),
        ("wrapup_codes: {done: " + "x" * 81 + "}\n", "wrapup_codes: done: a label"),
        ("wrapup_codes: [done]\n", "wrapup_codes: Input should be a valid dictionary"),
    ],
)
def test_bad_wrap_up_codes_are_refused_at_load(workdir: Path, text: str, expected: str) -> None:
    config = write(workdir / "config.yaml", text)
    assert config_error(config_file=config, environ={}).startswith(expected)
