"""A pipeline is checked before it runs: its policy files are in the policies folder and load, its
environments are the daemon's; `canaryctl rollout start` refuses one that is not, writing nothing."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from controller import shipped
from controller.errors import ConfigError
from controller.rollout import preflight
from controller.config.yamlfile import load_model_text
from controller.rollout.pipeline import DEFAULT_PIPELINE, Pipeline, load_pipeline
from tests.support.canaryctl import assert_refused, canaryctl
from tests.support.checkout import EXAMPLES, REPO

POLICIES = REPO / "policies"

CANARY = """\
name: canary-only
stages:
  - name: A
    environment: sim
    account: master
    duration: 1h
    policies: stage-a.yaml
  - name: C
    environment: sim
    account: canary
    duration: 1h
    policies: {policies}
    capital_cap: 0.02
    baseline: master
"""


def pipeline(policies: str = "stage-c.yaml") -> Pipeline:
    return load_model_text(Pipeline, CANARY.format(policies=policies), "canary.yaml")


def refusal(*args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        preflight.check_pipeline(*args, **kwargs)
    return caught.value


def test_the_shipped_pipelines_name_only_shipped_policy_files():
    for path in sorted(DEFAULT_PIPELINE.parent.glob("*.yaml")):
        preflight.check_pipeline(load_pipeline(path), shipped.policies_dir(), source=str(path))
    preflight.check_folder(shipped.policies_dir())


def test_a_policy_file_missing_from_the_folder_is_refused_naming_the_stage_and_the_file():
    error = refusal(pipeline("stage-x.yaml"), POLICIES, source="canary.yaml")
    assert (error.file, error.field) == ("canary.yaml", "stages[1].policies")
    assert error.message == f"stage C names the policy file stage-x.yaml, which is not in the policies folder {POLICIES}"


def test_a_broken_policy_file_is_refused_naming_its_own_file(tmp_path):
    shutil.copytree(POLICIES, tmp_path / "policies")
    (tmp_path / "policies" / "stage-c.yaml").write_text("stage: C\npolicies: [{name: x}]\n")
    error = refusal(pipeline(), tmp_path / "policies", source="canary.yaml")
    assert error.file == str(tmp_path / "policies" / "stage-c.yaml")


def test_an_environment_the_config_does_not_define_is_refused_naming_the_stage_and_the_config():
    error = refusal(load_pipeline(), POLICIES, source="default.yaml", environments={"sim": None},
                    config_file="/etc/canary-controller/controller.yaml")
    assert (error.file, error.field) == ("default.yaml", "stages[2].environment")
    assert error.message == ("stage C runs in environment 'live', which the daemon's config "
                             "/etc/canary-controller/controller.yaml does not define (its environments: sim)")


def test_a_missing_policies_folder_is_refused_as_such(tmp_path):
    for check in (lambda: preflight.check_folder(tmp_path / "nowhere"),
                  lambda: preflight.check_pipeline(pipeline(), tmp_path / "nowhere", source="canary.yaml")):
        with pytest.raises(ConfigError) as caught:
            check()
        assert caught.value.file == str(tmp_path / "nowhere")
        assert caught.value.message.startswith("the policies folder does not exist")


def test_a_folder_with_a_broken_file_is_refused_even_when_no_pipeline_names_it(tmp_path):
    shutil.copytree(POLICIES, tmp_path / "policies")
    (tmp_path / "policies" / "extra.yaml").write_text("not: [a policy file\n")
    with pytest.raises(ConfigError) as caught:
        preflight.check_folder(tmp_path / "policies")
    assert caught.value.file == str(tmp_path / "policies" / "extra.yaml")


# ---------------------------------------------------------------- canaryctl rollout start


@pytest.fixture
def recorded(sqlite_url):
    assert canaryctl("db", "upgrade", db=sqlite_url).code == 0
    added = canaryctl("release", "add", "1.1.0", "--manifest", str(EXAMPLES / "reference-bot" / "manifest.yaml"),
                      "--config", str(EXAMPLES / "reference-bot" / "strategy-next.yaml"), db=sqlite_url)
    assert added.code == 0, added.err
    return sqlite_url


def no_rollout(db: str) -> bool:
    return canaryctl("rollout", "list", "--json", db=db).out == ""


def config_file(tmp_path, **settings) -> str:
    path = tmp_path / "controller.yaml"
    path.write_text(yaml.safe_dump({"environments": {"sim": {"kind": "sim"}}, **settings}))
    return str(path)


def test_rollout_start_refuses_a_pipeline_whose_policy_file_is_not_shipped(recorded, tmp_path):
    file = tmp_path / "canary.yaml"
    file.write_text(CANARY.format(policies="stage-x.yaml"))
    refused = canaryctl("rollout", "start", "1.1.0", "--pipeline", str(file), db=recorded)
    assert_refused(refused, f"{file}: stages[1].policies: stage C names the policy file stage-x.yaml, which is "
                            f"not in the policies folder {shipped.policies_dir()}")
    assert no_rollout(recorded)


def test_rollout_start_refuses_a_stage_in_an_environment_the_config_does_not_define(recorded, tmp_path):
    config = config_file(tmp_path)
    refused = canaryctl("--config", config, "rollout", "start", "1.1.0", db=recorded)
    assert_refused(refused, f"{DEFAULT_PIPELINE}: stages[2].environment: stage C runs in environment 'live', which "
                            f"the daemon's config {config} does not define (its environments: sim)")
    assert no_rollout(recorded)


def test_rollout_start_checks_the_policy_files_in_the_configs_policies_folder(recorded, tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    (policies / "stage-c.yaml").unlink()
    file = tmp_path / "canary.yaml"
    file.write_text(CANARY.format(policies="stage-c.yaml"))
    refused = canaryctl("--config", config_file(tmp_path, policies_dir="policies"), "rollout", "start", "1.1.0",
                        "--pipeline", str(file), db=recorded)
    assert_refused(refused, "stages[1].policies: stage C names the policy file stage-c.yaml", str(policies))
    assert no_rollout(recorded)


def test_rollout_start_without_a_config_says_the_environments_are_unchecked(recorded, tmp_path):
    file = tmp_path / "canary.yaml"
    file.write_text(CANARY.format(policies="stage-c.yaml"))
    started = canaryctl("rollout", "start", "1.1.0", "--pipeline", str(file), "--json", db=recorded)
    assert started.code == 0, started.err
    assert json.loads(started.out)["release"] == "1.1.0"
    assert "no daemon config" in started.err and "its environments are unchecked" in started.err


SHADOW_FIRST = """\
name: shadow-first
stages:
  - name: C-shadow
    environment: testnet
    account: canary
    mode: shadow
    duration: 1h
    policies: stage-c-shadow.yaml
  - name: C
    environment: testnet
    account: canary
    duration: 1h
    policies: stage-c.yaml
"""


def daemon_config(tmp_path, shadow_key: bool):
    from controller.config.daemon import load_daemon_config

    shadow = "        shadow_key: env:SHADOW_KEY\n        shadow_secret: env:SHADOW_SECRET\n" if shadow_key else ""
    path = tmp_path / "controller.yaml"
    path.write_text("environments:\n  testnet:\n    kind: testnet\n    accounts:\n      canary:\n"
                    "        api_key: env:KEY\n        api_secret: env:SECRET\n" + shadow)
    return path, load_daemon_config(path)


def test_a_shadow_stage_on_an_account_without_a_shadow_key_is_refused_at_its_line(tmp_path):
    file = tmp_path / "shadow-first.yaml"
    file.write_text(SHADOW_FIRST)
    config_path, config = daemon_config(tmp_path, shadow_key=False)

    error = refusal(load_pipeline(file), POLICIES, source=str(file), environments=config.environments,
                    config_file=str(config_path))

    assert (error.file, error.line, error.field) == (str(file), 6, "stages[0].mode")
    assert error.message.startswith("stage C-shadow runs in shadow mode on account 'canary' of environment 'testnet', "
                                    "which names no read-only key: set shadow_key and shadow_secret under "
                                    "environments.testnet.accounts.canary")
    _, config = daemon_config(tmp_path, shadow_key=True)
    preflight.check_pipeline(load_pipeline(file), POLICIES, source=str(file), environments=config.environments)


def test_canaryctl_rollout_start_refuses_a_shadow_stage_without_a_shadow_key(tmp_path):
    file = tmp_path / "shadow-first.yaml"
    file.write_text(SHADOW_FIRST)
    config_path, _ = daemon_config(tmp_path, shadow_key=False)

    result = canaryctl("--db", f"sqlite:///{tmp_path / 'canary.db'}", "--config", str(config_path), "rollout",
                       "start", "1.1.0", "--pipeline", str(file))

    assert_refused(result, f"{file}:6: stages[0].mode: stage C-shadow runs in shadow mode")
