"""The closed-loop simulator: streamrec against users whose tastes only the simulator knows.

The quality tests run in-process (deterministic for a seed) and print their numbers, so a
failing bound shows how far off it was. Bounds are conservative: they hold with a wide margin at
the sizes used here (see the report numbers in the lead's note for larger runs).
"""

from __future__ import annotations

import re
import stat
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from streamrec.settings import KafkaSettings, ModelSettings, ServiceSettings, Settings
from streamrec.sim.options import SIMULATION_MODEL_DEFAULTS, SimulationOptions
from streamrec.sim.report import SimulationReport, write_report
from streamrec.sim.run import simulate
from streamrec.store import checkpoint
from streamrec.store.checkpoint_key import STATE_DIR_KEY, state_dir_key


def sim_settings(**model: object) -> Settings:
    return Settings(model=ModelSettings(**{**SIMULATION_MODEL_DEFAULTS, **model}))


def show(name: str, report: SimulationReport) -> None:
    h, d = report.second_half, report.discovery
    print(
        f"{name}: {report.events} events, second half: CTR {h['ctr']:.3f} (expected "
        f"{h['expected_ctr']:.3f}) oracle {h['oracle_ctr']:.3f} random {h['random_ctr']:.3f} "
        f"popular {h['popular_ctr']:.3f}; new items shown {d.shown}/{d.new_items}, median "
        f"visits known→shown {d.median_visits_known_to_shown}, arrival→shown "
        f"{d.median_visits_to_shown}"
    )


def test_streamrec_beats_random_and_popular_and_reaches_a_fraction_of_the_oracle() -> None:
    report = simulate(sim_settings(), SimulationOptions(events=10_000, seed=0))
    show("default settings", report)
    h = report.second_half
    assert report.events >= 10_000
    assert h["expected_ctr"] is not None and h["oracle_ctr"] is not None
    assert h["random_ctr"] is not None and h["popular_ctr"] is not None and h["ctr"] is not None
    # Measured ≈ 2.6× random, 1.6× popular, 0.33× oracle at this size.
    assert h["expected_ctr"] > 2.0 * h["random_ctr"]
    assert h["expected_ctr"] > 1.2 * h["popular_ctr"]
    assert h["expected_ctr"] > 0.25 * h["oracle_ctr"]
    assert h["oracle_ctr"] > h["expected_ctr"]  # the oracle is an upper bound, or it is broken
    # Realised clicks agree with the hidden probabilities of what was shown.
    assert h["ctr"] > 1.8 * h["random_ctr"]
    assert abs(h["ctr"] - h["expected_ctr"]) < 0.02


def test_without_exploration_new_items_reach_users_later() -> None:
    """Visits from streamrec's first event about a new item to its first appearance in a list.

    Counted from the first event (a browse), not from the item's arrival: before that streamrec
    cannot know the item, with or without exploration. Never shown counts as infinitely late.
    """
    medians: dict[str, list[float]] = {"none": [], "epsilon_greedy": []}
    for seed in (0, 1):
        for policy in medians:
            report = simulate(
                sim_settings(exploration=policy), SimulationOptions(events=6_000, seed=seed)
            )
            show(f"seed {seed}, exploration {policy}", report)
            assert report.discovery.new_items >= 40
            median = report.discovery.median_visits_known_to_shown
            medians[policy].append(float("inf") if median is None else median)
    print("median visits known→shown by policy over seeds 0, 1:", medians)
    # Measured with the first kNN ranker: ε-greedy 82 and 118 visits, none 189 and 497 (seeds 0,
    # 1); after the ranker's retuning the sums were 225 vs 539 (2.4x).
    for off, on in zip(medians["none"], medians["epsilon_greedy"], strict=True):
        assert off > 1.5 * on
    assert sum(medians["none"]) > 2.0 * sum(medians["epsilon_greedy"])
    assert max(medians["epsilon_greedy"]) < 250


def test_in_process_runs_are_deterministic_and_the_report_is_plottable(tmp_path: Path) -> None:
    options = SimulationOptions(events=2_000, seed=3, window_visits=200)
    first = simulate(sim_settings(), options)
    second = simulate(sim_settings(), options)

    def without_timing(report: SimulationReport) -> list[dict[str, object]]:
        return [{k: v for k, v in p.items() if k != "events_per_second"} for p in report.series]

    assert without_timing(first) == without_timing(second)
    assert first.overall == second.overall
    assert first.discovery == second.discovery

    path = tmp_path / "simulation.json"
    write_report(first, path)
    data = orjson.loads(path.read_bytes())
    assert data["kind"] == "simulation"
    assert data["series"], "one point per window"
    for point in data["series"]:
        assert {"events", "ctr", "oracle_ctr", "random_ctr", "popular_ctr"} <= set(point)
    assert [p["events"] for p in data["series"]] == sorted(p["events"] for p in data["series"])
    assert data["ctr"] == first.overall["ctr"]

    pytest.importorskip("matplotlib")
    from streamrec.evaluate.report import render_report

    out = render_report(path, tmp_path / "simulation.png")
    assert out.stat().st_size > 0


def test_position_bias_lowers_what_every_list_can_earn() -> None:
    flat = simulate(sim_settings(), SimulationOptions(events=1_500, seed=2))
    biased = simulate(sim_settings(), SimulationOptions(events=1_500, seed=2, position_bias=1.0))
    assert flat.overall["oracle_ctr"] is not None and biased.overall["oracle_ctr"] is not None
    # With P(look at rank r) = 1/r the ten slots are worth ~2.9 of 10 on average.
    assert biased.overall["oracle_ctr"] < 0.5 * flat.overall["oracle_ctr"]


def test_both_transports_show_users_the_same_lists() -> None:
    """What the Kafka loop reads back (a published message) is what the in-process loop hands
    over (the pipeline's Recommendation), so the two transports are compared like for like."""
    from streamrec.contract.events import encode_recommendation
    from streamrec.contract.records import Record
    from streamrec.core.pipeline import Pipeline
    from streamrec.sim.loops import _decode_list, shown_list
    from streamrec.sim.users import CtrTally, Users

    options = SimulationOptions(events=600, seed=3)
    model = sim_settings().model
    users, pipeline = Users(options, model.k), Pipeline(model)
    recommendations = []
    while users.events_made < options.events:
        events = [e for user in users.visitors(50).tolist() for e in users.visit(user, CtrTally())]
        result = pipeline.process([Record(value=value, key=key) for key, value in events])
        recommendations.extend(result.recommendations)
    assert recommendations
    for rec in recommendations:
        assert _decode_list(encode_recommendation(rec)) == shown_list(rec)
    assert _decode_list(b"not a list") is None and _decode_list(None) is None


@pytest.mark.kafka
def test_simulator_closes_the_loop_through_kafka(
    kafka_bootstrap: str, unique_topic: Callable[..., str], state_dir: Path
) -> None:
    """Events to the broker, the real consumer process in between, lists back from the topic."""
    events, recs, dlq = unique_topic("events"), unique_topic("recs"), unique_topic("dlq")
    settings = Settings(
        model=ModelSettings(**SIMULATION_MODEL_DEFAULTS),
        kafka=KafkaSettings(
            topics=[events],
            recommendations_topic=recs,
            dlq_topic=dlq,
            group_id=f"{events}-consumer",
        ),
        service=ServiceSettings(metrics_port=0),
    )
    report = simulate(
        settings,
        SimulationOptions(events=1_500, window_visits=200, sync_timeout_s=30.0),
        transport="kafka",
        bootstrap_servers=kafka_bootstrap,
        state_dir=state_dir,
    )
    show("kafka", report)
    assert report.events >= 1_500
    assert report.sync_timeouts == 0, "every user who acted got a fresh list in time"
    assert report.lists_received > 0
    assert report.overall["ctr"] is not None and report.overall["oracle_ctr"] is not None
    assert sum(p["visits_with_list"] for p in report.series) > 0
    # The consumer stopped gracefully and learned each event exactly once, none rejected.
    assert report.consumer is not None
    assert report.consumer["learned"] == report.events
    assert report.consumer["dead_letters"] == 0
    assert any(p.suffix == ".ckpt" for p in state_dir.iterdir()), "checkpointed into state_dir"
    # No key was configured: the consumer signed with the state dir's own key, kept private.
    assert stat.S_IMODE((state_dir / STATE_DIR_KEY).stat().st_mode) == 0o600
    final = checkpoint.inspect(state_dir, state_dir_key(state_dir))
    assert final["events_learned"] == report.events


@pytest.mark.kafka
def test_demo_runs_against_a_broker_and_reports_the_consumers_metrics(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    import io

    from rich.console import Console

    from streamrec.sim.demo import run_demo

    events, recs, dlq = unique_topic("events"), unique_topic("recs"), unique_topic("dlq")
    settings = Settings(
        kafka=KafkaSettings(
            topics=[events], recommendations_topic=recs, dlq_topic=dlq, group_id=f"{events}-demo"
        )
    )
    out = io.StringIO()
    code = run_demo(
        events=800,
        bootstrap_servers=kafka_bootstrap,
        settings=settings,
        console=Console(file=out, width=200),
        options=SimulationOptions(window_visits=200, sync_timeout_s=30.0),
    )
    text = out.getvalue()
    print(text)
    assert code == 0
    assert "metrics: http://127.0.0.1:" in text
    assert "second-half CTR" in text
    # The scrape happened while the consumer ran: the learned counter is in the summary.
    learned = next(line for line in text.splitlines() if "streamrec_events_learned_total" in line)
    assert int(learned.split("│")[2].split()[0].replace(",", "")) > 0
    # The demo publishes the simulated catalog: the lists it prints give reasons with titles.
    assert "the list u" in text and "holds now" in text
    assert re.search(r"because you liked \w+ \w+ \(#\d+\)", text), "no title in a reason"


def test_broker_flags_without_the_kafka_transport_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--bootstrap-servers` alone used to run in-process and never touch the broker named."""
    from streamrec.cli import main

    assert main(["simulate", "--bootstrap-servers", "kafka:9092", "--quiet"]) != 0
    error = capsys.readouterr().err
    assert "--transport kafka" in error and len(error.strip().splitlines()) == 1
