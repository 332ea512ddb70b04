"""Routing rules: read from the config, matched in order over a job's traits."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from retouch.sdk import Operation
from retouch.server.breaker import BreakerSettings
from retouch.server.config import ConfigError, load_config
from retouch.server.routing_rules import JobTraits, RuleError, first_match, parse_rules

RULES = [
    {
        "name": "small-removals-stay-local",
        "when": {"mask_fraction_max": 0.3, "prompt": False},
        "choose": {"kind": "local", "prefer": "cost"},
    },
    {
        "name": "big-pro-jobs",
        "when": {"pixels_min": 1_000_000, "plans": ["pro"], "operations": ["inpaint"]},
        "choose": {"providers": ["stability", "replicate"]},
    },
    {"name": "everything-else-hosted", "choose": {"kind": "hosted", "prefer": "quality"}},
]


def job(**changes: object) -> JobTraits:
    traits: dict[str, object] = {
        "operation": Operation.INPAINT,
        "pixels": 256 * 256,
        "mask_fraction": 0.1,
        "prompt": False,
        "plan": "free",
    }
    traits.update(changes)
    return JobTraits(**traits)  # type: ignore[arg-type]


def chosen(traits: JobTraits) -> str | None:
    rule = first_match(parse_rules(RULES), traits)
    return rule.name if rule else None


def test_the_first_matching_rule_wins() -> None:
    assert chosen(job()) == "small-removals-stay-local"
    assert chosen(job(mask_fraction=0.3)) == "everything-else-hosted"  # the max is exclusive
    assert chosen(job(prompt=True)) == "everything-else-hosted"
    big = job(pixels=2_000_000, mask_fraction=0.5, plan="pro")
    assert chosen(big) == "big-pro-jobs"
    assert chosen(job(pixels=2_000_000, mask_fraction=0.5, plan="free")) == (
        "everything-else-hosted"
    )
    big_outpaint = job(
        pixels=2_000_000, mask_fraction=0.5, plan="pro", operation=Operation.OUTPAINT
    )
    assert chosen(big_outpaint) == "everything-else-hosted"


def test_a_mask_condition_never_matches_an_edit_without_a_mask() -> None:
    enhance = job(operation=Operation.ENHANCE, mask_fraction=None)
    assert chosen(enhance) == "everything-else-hosted"


def test_no_rule_matching_means_default_routing() -> None:
    rules = parse_rules([{"name": "prompted", "when": {"prompt": True}, "choose": {}}])
    assert first_match(rules, job(prompt=False)) is None


def test_a_named_provider_list_keeps_its_order() -> None:
    rule = parse_rules(RULES)[1]
    assert rule.choose.providers == ("stability", "replicate")
    assert rule.choose.takes("replicate", remote=True)
    assert not rule.choose.takes("opencv", remote=False)


@pytest.mark.parametrize(
    ("tables", "words"),
    [
        ({"name": "x"}, "routing_rules"),
        ([{"choose": {}}], "routing_rules[0]: name is required"),
        ([{"name": "x"}], "routing_rules[0] ('x'): choose is required"),
        ([{"name": "x", "choose": {"kind": "cloud"}}], "kind must be one of any, local, hosted"),
        ([{"name": "x", "choose": {"prefer": "cheap"}}], "prefer must be one of"),
        ([{"name": "x", "when": {"mask_fraction_max": 30}, "choose": {}}], "must be 0..1"),
        ([{"name": "x", "when": {"operations": ["paint"]}, "choose": {}}], "unknown operations"),
        ([{"name": "x", "when": {"prompt": "yes"}, "choose": {}}], "prompt must be true or false"),
        ([{"name": "x", "when": {"pixel": 1}, "choose": {}}], "unknown settings pixel"),
        ([{"name": "x", "choose": {}}, {"name": "x", "choose": {}}], "names must be unique (x)"),
    ],
)
def test_bad_rules_are_refused_naming_the_rule(tables: object, words: str) -> None:
    with pytest.raises(RuleError) as refused:
        parse_rules(tables)
    assert words in str(refused.value)


def test_rules_and_breakers_come_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "retouch.toml"
    path.write_text(
        textwrap.dedent(
            """
            [providers.opencv]
            inpaint_radius = 5

            [providers.opencv.circuit_breaker]
            failures = 2
            cooldown_s = 15

            [[routing_rules]]
            name = "small-removals-stay-local"
            when = { mask_fraction_max = 0.3, prompt = false }
            choose = { kind = "local", prefer = "cost" }

            [[routing_rules]]
            name = "everything-else-hosted"
            choose = { kind = "hosted", prefer = "quality" }
            """
        )
    )
    config = load_config(path, environ={})
    assert [rule.name for rule in config.routing_rules] == [
        "small-removals-stay-local",
        "everything-else-hosted",
    ]
    assert config.circuit_breakers == {"opencv": BreakerSettings(failures=2, cooldown_s=15.0)}
    assert config.providers == {"opencv": {"inpaint_radius": 5}}  # the provider never sees it


def test_a_bad_rule_or_breaker_in_the_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "retouch.toml"
    path.write_text('[[routing_rules]]\nname = "x"\nchoose = { kind = "cloud" }\n')
    with pytest.raises(ConfigError, match="routing_rules"):
        load_config(path, environ={})
    path.write_text("[providers.opencv.circuit_breaker]\nfailures = 0\n")
    with pytest.raises(ConfigError, match=r"\[providers.opencv.circuit_breaker\]"):
        load_config(path, environ={})
    path.write_text("[circuit_breakers]\nfailures = 1\n")
    with pytest.raises(ConfigError, match="unknown config settings: circuit_breakers"):
        load_config(path, environ={})
