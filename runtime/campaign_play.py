"""Play a campaign against a running engine (``ecrm campaign simulate``, the ``ecrm up`` demo): simulated customers
ask the API for their recommendations (the exposure is recorded, the variant answered), then click and buy at each
variant's true rate through Kafka, so the effect report shows a real, known difference."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from core.kafka import ensure_topics, make_producer, produce_events
from core.settings import Settings
from runtime.simulate import CampaignPlay, Served, campaign_events

Echo = Callable[[str], None]


def serve_all(base_url: str, headers: dict[str, str], customers: list[str], echo: Echo) -> list[Served]:
    """Ask for each customer's recommendations; keep those served under a campaign."""
    out: list[Served] = []
    with httpx.Client(base_url=base_url, headers=headers, timeout=10) as client:
        for k, customer in enumerate(customers):
            resp = client.get(f"/v1/customers/{customer}/recommendations", params={"n": 6})
            resp.raise_for_status()
            body = resp.json()
            if body.get("variant"):
                items = tuple(str(i["item_id"]) for i in body["items"])
                out.append(Served(customer, str(body["variant"]), str(body["recommendation_id"]), items))
            if (k + 1) % 500 == 0:
                echo(f"campaign demo: {k + 1}/{len(customers)} customers served")
    return out


def play(settings: Settings, base_url: str, headers: dict[str, str], play: CampaignPlay, customers: int,
         echo: Echo) -> tuple[list[Served], int]:  # fmt: skip
    """Serve ``customers`` simulated customers, then produce their clicks and purchases. Returns what was served
    and how many events were produced."""
    ids = [f"camp-{play.seed}-{i:05d}" for i in range(customers)]
    served = serve_all(base_url, headers, ids, echo)
    ensure_topics(settings, timeout_s=settings.producer_timeout_s)
    producer = make_producer(settings)
    try:
        count = produce_events(producer, settings.events_topic, campaign_events(play, served, int(time.time() * 1000)))
    finally:
        producer.close()
    return served, count


def demo_rates(settings: Settings, better: str | None, rate: float, base_rate: float) -> tuple[str, dict[str, float]]:
    """The running campaign on the personal placement and the true rates: ``better`` (default: its first variant
    that shows items) converts at ``rate``, every other variant at ``base_rate``. Raises ValueError when no
    campaign runs there or ``better`` is not one of its variants."""
    from merchandising.campaign_source import campaigns_path, load_campaigns

    now = int(time.time() * 1000)
    running = load_campaigns(campaigns_path(settings.campaigns_file)).for_placement("personal", now)
    if not running:
        raise ValueError(f"no campaign covers the personal placement now in {campaigns_path(settings.campaigns_file)}")
    campaign = running[0]
    names = [v.name for v in campaign.variants]
    chosen = better or next(v.name for v in campaign.variants if not v.holdout)
    if chosen not in names:
        raise ValueError(f"campaign {campaign.name!r} has no variant {chosen!r} (variants: {', '.join(names)})")
    return campaign.name, {name: (rate if name == chosen else base_rate) for name in names}
