"""Campaigns as pure code: the file's validation, the hash assignment (sticky, matching the weights, independent per
campaign), recommendation ids naming a campaign, which events count for which campaign, and the statistics of the
report (intervals that contain a known effect, A/A runs, the sample-ratio check, the verdict)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from scipy import stats
from typer.testing import CliRunner

from analytics.experiments import Arm, compare_means, compare_proportions, effect_report, sample_ratio
from core.settings import Settings
from ecrm.cli import app
from merchandising.campaign_source import CampaignsSource
from merchandising.campaigns import CampaignsError, bucket, parse_campaigns, tag_of, tagged_id
from profiles.campaigns import parse_counters, served_digest
from schemas import parse_event_obj
from stream.processing import campaign_outcomes

EXAMPLE = """
version: 1
campaigns:
  - name: engine-vs-popular
    goal: purchase
    from: "2026-11-01T00:00:00Z"
    until: "2027-02-01T00:00:00Z"
    audience: all
    placements: [personal]
    variants:
      - {name: engine, weight: 45}
      - {name: popular, weight: 45, strategy: popularity}
      - {name: holdout, weight: 10, holdout: true}
"""


def campaign_file(variants: str, extra: str = "", name: str = "c1") -> str:
    return f"""
version: 1
campaigns:
  - name: {name}
    goal: purchase
    from: "2026-01-01T00:00:00Z"
    until: "2027-01-01T00:00:00Z"
    placements: [personal]
    {extra}
    variants: {variants}
"""


def test_the_issue_example_is_valid() -> None:
    c = parse_campaigns(EXAMPLE).campaigns[0]
    assert c.name == "engine-vs-popular" and c.goal == "purchase" and c.segment is None
    assert [v.name for v in c.variants] == ["engine", "popular", "holdout"]
    assert c.variants[0].strategy == "engine" and c.variants[1].strategy == "popularity"
    assert c.holdout is not None and c.holdout.name == "holdout" and c.control.name == "holdout"
    assert c.weights == pytest.approx({"engine": 0.45, "popular": 0.45, "holdout": 0.10})


@pytest.mark.parametrize(
    ("variants", "extra", "expected"),
    [
        ("[{name: a, weight: 1}]", "", "campaign 'c1': variants: List should have at least 2 items"),
        ("[{name: a, weight: 1}, {name: a, weight: 1}]", "", "campaign 'c1': (campaign): two variants are named 'a'"),
        ("[{name: a, weight: 0}, {name: b, weight: 1}]", "", "variants.0.weight: Input should be greater than 0"),
        ("[{name: a, weight: 1, holdout: true}, {name: b, weight: 1, holdout: true}]", "", "at most one variant"),
        ("[{name: a, weight: 1, holdout: true, strategy: popularity}, {name: b, weight: 1}]", "", "takes no strategy"),
        ("[{name: a, weight: 1, strategy: magic}, {name: b, weight: 1}]", "", "variants.0.strategy: Input should be"),
        ("[{name: a, weight: 1, colour: red}, {name: b, weight: 1}]", "", "variants.0.colour: unknown field"),
        ("[{name: 'a b', weight: 1}, {name: b, weight: 1}]", "", "variants.0.name: String should match pattern"),
        ("[{name: a, weight: 1}, {name: b, weight: 1}]", "attribution_days: 0", "attribution_days: Input should be"),
    ],
)
def test_a_refused_file_names_the_campaign_the_field_and_the_reason(variants: str, extra: str, expected: str) -> None:
    text = campaign_file(variants, extra)
    with pytest.raises(CampaignsError) as err:
        parse_campaigns(text, "campaigns.yaml")
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_time_window_goal_audience_and_placements_are_checked() -> None:
    with pytest.raises(CampaignsError, match="campaign 'engine-vs-popular': goal: Input should be 'click'"):
        parse_campaigns(EXAMPLE.replace("goal: purchase", "goal: clicks"))
    bad_window = EXAMPLE.replace('until: "2027-02-01T00:00:00Z"', 'until: "2026-10-01T00:00:00Z"')
    with pytest.raises(CampaignsError, match="from must be before until"):
        parse_campaigns(bad_window)
    with pytest.raises(CampaignsError, match="placements.0"):
        parse_campaigns(EXAMPLE.replace("[personal]", "[homepage]"))
    segment = parse_campaigns(EXAMPLE.replace("audience: all", "audience: {segment: champions}")).campaigns[0]
    assert segment.segment == "champions"
    with pytest.raises(CampaignsError, match="audience"):
        parse_campaigns(EXAMPLE.replace("audience: all", "audience: everyone"))
    with pytest.raises(CampaignsError, match="two campaigns are named"):
        parse_campaigns(EXAMPLE + EXAMPLE.split("campaigns:\n", 1)[1])


def test_assignment_is_deterministic_and_matches_the_weights() -> None:
    c = parse_campaigns(EXAMPLE).campaigns[0]
    units = [f"c:cust-{i}" for i in range(30_000)]
    first = [c.assign(u).name for u in units]
    assert first == [c.assign(u).name for u in units]  # sticky: the same unit, the same variant
    counts = [first.count(v.name) for v in c.variants]
    expected = [len(units) * w for w in c.weights.values()]
    p = stats.chisquare(counts, expected).pvalue
    assert p > 0.001, (counts, p)


def test_changing_one_campaign_does_not_reshuffle_another() -> None:
    two = EXAMPLE + campaign_file("[{name: a, weight: 50}, {name: b, weight: 50}]").split("campaigns:\n", 1)[1]
    edited = two.replace("{name: a, weight: 50}, {name: b, weight: 50}", "{name: a, weight: 10}, {name: b, weight: 90}")
    before, after = parse_campaigns(two), parse_campaigns(edited)
    units = [f"a:v{i}" for i in range(2000)]
    assert [before.campaigns[0].assign(u) for u in units] == [after.campaigns[0].assign(u) for u in units]
    assert [before.campaigns[1].assign(u) for u in units] != [after.campaigns[1].assign(u) for u in units]
    # the buckets of two campaigns are independent: knowing one says nothing of the other
    r = stats.pearsonr([bucket("x", u) for u in units], [bucket("y", u) for u in units])
    assert abs(r.statistic) < 0.1


def test_recommendation_ids_name_their_campaign() -> None:
    c = parse_campaigns(EXAMPLE).campaigns[0]
    rid = tagged_id("0123456789abcdef0123456789abcdef", c.name)
    assert tag_of(rid) == c.tag and c.tag in parse_campaigns(EXAMPLE).by_tag()
    assert tag_of("0123456789abcdef0123456789abcdef") is None


def _event(kind: str, ts: int, **extra: object) -> object:
    base = {"event_id": "e1", "timestamp": ts, "customer_id": "c1"}
    if kind == "purchase":
        return parse_event_obj({**base, "type": "purchase", "order_id": "o1", "currency": "EUR",
                                "lines": [{"item_id": "i1", "quantity": 1, "unit_price": 5.0}]})  # fmt: skip
    return parse_event_obj({**base, "type": "recommendation_click", "item_id": "i1", **extra})


def test_which_events_count_for_which_campaign() -> None:
    campaigns = parse_campaigns(EXAMPLE.replace("2027-02-01", "2026-11-15"))
    c = campaigns.campaigns[0]
    inside, outside = c.start_ms + 1000, c.end_ms + 1000
    assert [o.name for o in campaign_outcomes(_event("purchase", inside), campaigns)] == [c.name]  # type: ignore[arg-type]
    assert campaign_outcomes(_event("purchase", c.start_ms - 1), campaigns) == ()  # type: ignore[arg-type]
    click = _event("click", inside, recommendation_id=tagged_id("abc", c.name))
    (outcome,) = campaign_outcomes(click, campaigns)  # type: ignore[arg-type]
    assert outcome.clicked and outcome.attribution_ms == 7 * 86_400_000
    assert outcome.served == served_digest(tagged_id("abc", c.name)) and len(outcome.served) == 12
    assert campaign_outcomes(_event("click", inside, recommendation_id="abc"), campaigns) == ()  # type: ignore[arg-type]
    assert campaign_outcomes(_event("click", outside, recommendation_id=tagged_id("a", c.name)), campaigns) == ()  # type: ignore[arg-type]
    # conversions only from purchases the shop's server confirmed: a browser's (collect) purchase converts nothing
    bought = _event("purchase", inside)
    for source in ("server", "admin", "open", "direct"):
        assert len(campaign_outcomes(bought, campaigns, source)) == 1  # type: ignore[arg-type]
    assert campaign_outcomes(bought, campaigns, "collect") == ()  # type: ignore[arg-type]
    report = effect_report("purchase", [Arm("control", 0.5), Arm("b", 0.5)], "control", 10)
    assert "server" in report["counting"]["conversions"] and "collect" in report["counting"]["conversions"]


def test_the_exposure_record_keeps_the_newest_served_ids() -> None:
    from profiles.campaigns import SERVED_IDS_KEPT, remember_served

    ids = [served_digest(f"{i:032x}-t") for i in range(SERVED_IDS_KEPT + 10)]
    assert len(set(ids)) == len(ids) and served_digest("x-t") != served_digest("y-t")
    field = remember_served(None, ids[:3])
    assert field.split() == [ids[2], ids[1], ids[0]]  # newest first
    field = remember_served(field, ids[3:])
    kept = field.split()
    assert len(kept) == SERVED_IDS_KEPT and kept[0] == ids[-1] and ids[0] not in kept  # the oldest forgotten
    assert remember_served(field, [ids[-1]]).split() == kept  # served again: once


def test_counters_parse_per_variant() -> None:
    got = parse_counters({"engine:assigned": "3", "engine:revenue": "12.5", "hold-out:orders": "1", "x:junk": "9"})
    assert got["engine"]["assigned"] == 3 and got["engine"]["revenue"] == 12.5 and got["engine"]["clicks"] == 0
    assert got["hold-out"]["orders"] == 1 and "x" not in got


# ----- statistics -----


def test_newcombe_interval_matches_the_published_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873-890, table II example (a): 56/70 vs 48/80 -> 0.0524 .. 0.3339
    got = compare_proportions(56, 70, 48, 80)
    assert got["difference"] == pytest.approx(0.2, abs=1e-6)
    assert got["ci"][0] == pytest.approx(0.0524, abs=5e-4) and got["ci"][1] == pytest.approx(0.3339, abs=5e-4)
    assert 0 < got["p_value"] < 0.05


def test_welch_from_sums_matches_scipy_on_raw_data() -> None:
    rng = random.Random(3)
    a = [rng.expovariate(1 / 20) if rng.random() < 0.3 else 0.0 for _ in range(800)]
    b = [rng.expovariate(1 / 20) if rng.random() < 0.25 else 0.0 for _ in range(900)]
    got = compare_means(sum(a), sum(x * x for x in a), len(a), sum(b), sum(x * x for x in b), len(b))
    expected = stats.ttest_ind(a, b, equal_var=False)
    assert got["p_value"] == pytest.approx(expected.pvalue, rel=1e-4)
    ci = expected.confidence_interval(0.95)
    assert got["ci"][0] == pytest.approx(ci.low, rel=1e-4) and got["ci"][1] == pytest.approx(ci.high, rel=1e-4)


def _simulate(seed: int, n: int, rates: tuple[float, float], mean_order: float = 30.0) -> list[Arm]:
    """Two arms of ``n`` customers each: conversion at the given rates, exponential order values."""
    rng = random.Random(seed)
    arms = []
    for name, rate in zip(("control", "treatment"), rates, strict=True):
        revenue = [rng.expovariate(1 / mean_order) if rng.random() < rate else 0.0 for _ in range(n)]
        conv = sum(1 for r in revenue if r > 0)
        arms.append(Arm(name, 0.5, assigned=n, converters=conv, orders=conv, revenue=sum(revenue),
                        revenue_sq=sum(r * r for r in revenue)))  # fmt: skip
    return arms


A_A_SEEDS = 200


def test_a_a_campaigns_show_no_difference_in_most_seeds() -> None:
    """Figure for the report: how many of ``A_A_SEEDS`` A/A runs (2 x 2000 customers, 10% conversion) end with
    "no significant difference"; at a 5% level about 95% should."""
    quiet = 0
    for seed in range(A_A_SEEDS):
        report = effect_report("purchase", _simulate(seed, 2000, (0.10, 0.10)), "control", 100)
        quiet += report["verdict"] == "no significant difference"
    print(f"A/A: {quiet} of {A_A_SEEDS} seeds without a significant difference")
    assert quiet >= 0.9 * A_A_SEEDS


def test_a_known_uplift_is_inside_the_interval_in_about_95_percent_of_seeds() -> None:
    covered_rate = covered_rev = 0
    runs = 200
    for seed in range(runs):
        control, treatment = _simulate(1000 + seed, 2000, (0.10, 0.13))
        cmp = effect_report("purchase", [control, treatment], "control", 100)["comparisons"][0]
        lo, hi = cmp["conversion_rate"]["ci"]
        covered_rate += lo <= 0.03 <= hi
        lo, hi = cmp["revenue_per_customer"]["ci"]
        covered_rev += lo <= 0.03 * 30.0 <= hi
    print(f"known uplift +3 points: inside the 95% interval in {covered_rate} of {runs} seeds (revenue: {covered_rev})")
    assert covered_rate >= 0.9 * runs and covered_rev >= 0.9 * runs


def test_the_sample_ratio_check_flags_a_broken_split() -> None:
    fine = sample_ratio([Arm("a", 0.5, assigned=5030), Arm("b", 0.5, assigned=4970)])
    broken = sample_ratio([Arm("a", 0.5, assigned=5300), Arm("b", 0.5, assigned=4700)])
    assert not fine["flagged"] and broken["flagged"] and broken["p_value"] < 0.001
    arms = [Arm("a", 0.5, assigned=5300, converters=600), Arm("b", 0.5, assigned=4700, converters=500)]
    assert effect_report("purchase", arms, "a", 100)["verdict"].startswith("sample ratio mismatch")


def test_verdicts() -> None:
    few = [Arm("a", 0.5, assigned=50, converters=5), Arm("b", 0.5, assigned=50, converters=25)]
    assert effect_report("purchase", few, "a", 100)["verdict"] == "not enough data yet"
    better = [Arm("h", 0.5, assigned=5000, converters=500), Arm("x", 0.5, assigned=5000, converters=700)]
    assert effect_report("purchase", better, "h", 100)["verdict"] == "variant x better"
    worse = [Arm("h", 0.5, assigned=5000, converters=700), Arm("x", 0.5, assigned=5000, converters=500)]
    assert effect_report("purchase", worse, "h", 100)["verdict"] == "variant x worse than h"
    report = effect_report("revenue", better, "h", 100)
    assert report["goal_metric"] == "revenue_per_customer"
    assert "Welch" in report["comparisons"][0]["revenue_per_customer"]["method"]
    assert "Newcombe" in report["comparisons"][0]["conversion_rate"]["method"]


def test_ecrm_campaign_check(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(EXAMPLE)
    bad.write_text(EXAMPLE.replace("weight: 10", "weight: -1"))
    ok = CliRunner().invoke(app, ["campaign", "check", str(good)])
    assert (
        ok.exit_code == 0
        and "engine-vs-popular: goal purchase, personal; engine 45%, popular 45%, holdout 10%" in ok.output
    )
    refused = CliRunner().invoke(app, ["campaign", "check", str(bad)])
    assert refused.exit_code == 1
    assert "campaign 'engine-vs-popular': variants.2.weight: Input should be greater than 0" in refused.output


def test_the_shipped_file_runs_no_campaign_and_the_demo_plays_its_own() -> None:
    from runtime.demo import DEMO_CAMPAIGNS, demo_settings

    shipped_path = Path(__file__).resolve().parents[2] / "config" / "campaigns.yaml"
    shipped = shipped_path.read_text()
    assert parse_campaigns(shipped).names == []
    example = shipped.split("# campaigns:", 1)[1].split("\nversion:", 1)[0].replace("\n# ", "\n").split("\n")
    example[0] = "campaigns:"
    assert parse_campaigns("\n".join(["version: 1", *example])).names == ["engine-vs-popular"], "a valid example"
    assert parse_campaigns(DEMO_CAMPAIGNS.read_text()).names == ["engine-vs-popular"]
    base = Settings()
    assert demo_settings(base, {}).campaigns_file == str(DEMO_CAMPAIGNS)
    assert demo_settings(base, {"ECRM_CAMPAIGNS_FILE": "/x.yaml"}).campaigns_file == base.campaigns_file


def test_the_control_is_the_holdout_except_for_a_click_goal() -> None:
    from api.campaigns import control_of

    purchase_goal = parse_campaigns(EXAMPLE).campaigns[0]
    click_goal = parse_campaigns(EXAMPLE.replace("goal: purchase", "goal: click")).campaigns[0]
    no_holdout = parse_campaigns(campaign_file("[{name: a, weight: 1}, {name: b, weight: 1}]")).campaigns[0]
    assert control_of(purchase_goal) == "holdout"
    assert control_of(click_goal) == "engine"  # a holdout shows nothing, so it cannot be clicked
    assert control_of(no_holdout) == "a"


async def test_the_exposure_writer_batches_off_the_request_path_and_drops_over_its_bound() -> None:
    import asyncio

    from api.exposures import ExposureWriter
    from core import metrics
    from profiles.campaigns import Exposure

    class SlowStore:
        def __init__(self) -> None:
            self.batches: list[int] = []
            self.gate = asyncio.Event()

        async def record_exposures(self, batch: list[Exposure]) -> None:
            await self.gate.wait()
            self.batches.append(len(batch))

    store = SlowStore()
    writer = ExposureWriter(store, max_pending=3, batch=2)  # type: ignore[arg-type]
    dropped = metrics.CAMPAIGN_EXPOSURES_DROPPED._value.get()
    for i in range(6):  # the first goes to the writer at once; 3 wait; 2 are over the bound
        writer.add(Exposure(f"c:{i}", "exp", "a", 1, True))
        await asyncio.sleep(0)
    assert metrics.CAMPAIGN_EXPOSURES_DROPPED._value.get() - dropped == 2
    store.gate.set()
    await writer.drain()
    assert store.batches == [1, 2, 1]


def test_a_removed_campaigns_file_stops_the_campaigns_once_and_a_restored_one_runs_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "campaigns.yaml"
    path.write_text(EXAMPLE)
    source = CampaignsSource(path, check_interval_s=0.0)
    assert [c.name for c in source.current().campaigns] == ["engine-vs-popular"]
    path.unlink()
    with caplog.at_level("WARNING"):
        assert source.current().campaigns == ()
        loaded_at = source.loaded_at
        for _ in range(3):
            assert source.current().campaigns == ()
    assert sum("is gone" in r.getMessage() for r in caplog.records) == 1
    assert source.loaded_at == loaded_at  # not reset again on every poll while the file stays away
    path.write_text(EXAMPLE)
    assert [c.name for c in source.current().campaigns] == ["engine-vs-popular"]


def test_the_csv_export_escapes_cells_a_spreadsheet_would_run() -> None:
    from api.campaigns import ExportResult
    from api.routes.campaigns import csv_cell, export_csv

    for hostile in ('=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"):
        assert csv_cell(hostile) == "'" + hostile
    assert csv_cell("cust-1") == "cust-1" and csv_cell("") == ""
    row = {"customer_id": "=cmd|' /C calc'!A0", "campaign": "c", "variant": "v", "recommendation_id": "r-1",
           "item_ids": ["@a", "b"]}  # fmt: skip
    result = ExportResult("c", "Champions", [row])
    lines = export_csv(result).splitlines()
    assert lines[1] == "'=cmd|' /C calc'!A0,c,v,r-1,'@a b"
