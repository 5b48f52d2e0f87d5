"""`popcorn study plan`: the sample-size planner simulates the clustered design and answers in participants."""

from __future__ import annotations

import json

import pytest

from popcorn.study import StudyError, planner


def test_more_participants_narrow_the_interval_and_raise_power():
    small = planner.simulate(10, pairs=20, per_participant=10, effect=0.65, sims=12, bootstrap=150)
    large = planner.simulate(160, pairs=20, per_participant=10, effect=0.65, sims=12, bootstrap=150)
    assert large["half_width"] < small["half_width"]
    assert large["power"] >= small["power"] and large["power"] >= 0.75


def test_the_plan_meets_its_target_and_pair_variance_costs_participants():
    calm = planner.plan(20, 0.6, 10, half_width=0.08, pair_sd=0.0, participant_sd=0.3, sims=10, bootstrap=120)
    noisy = planner.plan(20, 0.6, 10, half_width=0.08, pair_sd=0.6, participant_sd=0.3, sims=10, bootstrap=120)
    assert calm["reachable"] and calm["half_width"] <= 0.08
    assert noisy["participants"] is None or noisy["participants"] > calm["participants"]
    assert calm["assumptions"]["pair_sd"] == 0.0 and "two-way" in calm["assumptions"]["interval"]


def test_few_pairs_set_a_floor_that_the_plan_names():
    out = planner.plan(3, 0.6, 3, half_width=0.02, pair_sd=1.0, sims=6, bootstrap=100, max_participants=160)
    assert not out["reachable"] and out["participants"] is None and "add pairs" in out["note"]


def test_bad_input_is_refused_with_what_to_enter():
    for kwargs in ({"pairs": 1, "effect": 0.6, "per_participant": 5},
                   {"pairs": 10, "effect": 0.5, "per_participant": 5},
                   {"pairs": 10, "effect": 1.2, "per_participant": 5},
                   {"pairs": 10, "effect": 0.6, "per_participant": 0}):
        with pytest.raises(StudyError):
            planner.plan(**kwargs, sims=2, bootstrap=10)


def test_the_cli_prints_the_answer_as_json(capsys):
    from popcorn.cli import main

    code = main(["study", "plan", "--pairs", "12", "--effect", "0.7", "--per-participant", "6", "--half-width", "0.1",
                 "--sims", "8", "--bootstrap", "100", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["participants"] >= 1 and out["half_width"] <= 0.1
