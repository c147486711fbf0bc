"""Settings precedence (flag > FARM_* env > config file > default) and validation."""
from __future__ import annotations

import pytest

from farm.errors import ConfigError
from farm.settings import Settings, load


def test_precedence_flag_over_env_over_file_over_default(tmp_path):
    cfg = tmp_path / "farm.toml"
    cfg.write_text('lease_ttl = 30\nstall_timeout = 120\nflower_port = 6000\n')
    env = {"FARM_STALL_TIMEOUT": "90", "FARM_FLOWER_PORT": "6001"}
    s = load({"flower_port": 6002, "data_dir": None}, config_file=str(cfg), env=env)
    assert s.lease_ttl == 30.0          # file
    assert s.stall_timeout == 90.0      # env beats file
    assert s.flower_port == 6002        # flag beats env
    assert s.reaper_interval == Settings().reaper_interval  # default


def test_unknown_key_in_config_file_is_refused_with_the_file_named(tmp_path):
    cfg = tmp_path / "farm.toml"
    cfg.write_text('lease_tll = 30\n')
    with pytest.raises(ConfigError, match="unknown setting 'lease_tll'") as e:
        load(config_file=str(cfg), env={})
    assert str(cfg) in str(e.value)


def test_bad_values_are_refused():
    with pytest.raises(ConfigError, match="not a valid int"):
        load(env={"FARM_REDIS_PORT": "six"})
    with pytest.raises(ConfigError, match="without a password"):
        load(env={"FARM_REDIS_URL": "redis://head.lan:6379/0"})
    assert load(env={"FARM_REDIS_URL": "redis://:pw@head.lan:6379/0"}).redis_url
    with pytest.raises(ConfigError, match="not a dialect"):
        load(env={"FARM_DARKNET_DIALECT": "yolo"})


def test_settings_travel_to_child_processes_through_the_environment():
    s = Settings(lease_ttl=7.0, host_name="lily2")
    assert load(env=s.to_env()) == s


def test_the_sweep_tick_result_expiry_and_lost_restarts_are_settings(tmp_path):
    """Once constants in workers/app.py and farm/runs/policy.py: a FARM_* value reaches
    beat's schedule, Celery's result backend and the restart policy."""
    from celery import Celery

    from farm.runs.policy import Policy
    from workers.app import configure
    env = {"FARM_SWEEP_TICK": "5", "FARM_RESULT_EXPIRES": "60", "FARM_LOST_RESTARTS": "2",
           "FARM_DATA_DIR": str(tmp_path)}
    s = load(env=env)
    app = configure(Celery("settings-test"), s)
    tick = app.conf.beat_schedule["sweep-tick-all"]
    assert tick["schedule"] == 5.0 and tick["options"] == {"expires": 5.0}
    assert app.conf.result_expires == 60
    assert Policy.from_settings(s).lost_restarts == 2
    assert Policy().lost_restarts == Settings().lost_restarts == 10
    with pytest.raises(ConfigError, match="sweep_tick"):
        load(env={"FARM_SWEEP_TICK": "0"})
