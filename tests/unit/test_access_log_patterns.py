"""The URL patterns file: the shipped default, and clear errors for broken files."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.patterns import DEFAULT_PATTERNS_PATH, PatternError, extension, load_patterns, parse_patterns


def test_shipped_default_loads() -> None:
    patterns = load_patterns()
    assert patterns.source == str(DEFAULT_PATTERNS_PATH)
    assert [r.name for r in patterns.rules][:2] == ["presentation", "presentations-index"]
    assert patterns.is_asset("/style2.css", "/style2.css")
    assert patterns.is_asset("/", "/?flav=atom")
    assert patterns.is_asset("/robots.txt", "/robots.txt")
    assert not patterns.is_asset("/blog/geekery/ssl-latency.html", "/blog/geekery/ssl-latency.html")
    assert patterns.is_page("/about/") and patterns.is_page("/x.xhtml") and not patterns.is_page("/x.tar.gz")


@pytest.mark.parametrize(
    ("path", "rule", "fields"),
    [
        (
            "/presentations/logstash-puppetconf-2012/",
            "presentation",
            ("presentation:logstash-puppetconf-2012", "presentations"),
        ),
        ("/presentations/vim", "presentation", ("presentation:vim", "presentations")),
        (
            "/presentations/puppet-at-loggly/puppet-at-loggly.pdf.html",
            "presentation",
            ("presentation:puppet-at-loggly", "presentations"),
        ),
        ("/blog/geekery/ssl-latency.html", "blog-post", ("blog:ssl-latency", "blog/geekery")),
        (
            "/blog/geekery/puppet-nodeless-configuration",
            "blog-post",
            ("blog:puppet-nodeless-configuration", "blog/geekery"),
        ),
        ("/blog/growing-logstash-value.html", "blog-post-top", ("blog:growing-logstash-value", "blog")),
        (
            "/blog/articles/week-of-unix-tools/day-2-cut-and-paste.html",
            "article",
            ("article:week-of-unix-tools", "articles"),
        ),
        ("/articles/ssh-security/", "article", ("article:ssh-security", "articles")),
        ("/projects/xdotool/xdotool.xhtml", "project", ("project:xdotool", "projects")),
    ],
)
def test_default_item_rules(path: str, rule: str, fields: tuple[str, str]) -> None:
    found = load_patterns().first_match("GET", path, path)
    assert found is not None
    assert found[0].name == rule
    rendered = found[0].render(found[1])
    assert (rendered["item_id"], rendered["category"]) == fields


@pytest.mark.parametrize("path", ["/", "/blog", "/blog/geekery", "/presentations/", "/blog/tags/puppet", "/kibana/"])
def test_default_pages_are_not_items(path: str) -> None:
    found = load_patterns().first_match("GET", path, path)
    assert found is None or found[0].event == "page_view"


def test_extension() -> None:
    assert extension("/a/b.PNG") == "png"
    assert extension("/a/b.tar.gz") == "gz"
    assert extension("/a/") is None and extension("/a") is None and extension("/.hidden") is None


def _error(text: str) -> str:
    with pytest.raises(PatternError) as caught:
        parse_patterns(text, source="p.yaml")
    message = str(caught.value)
    assert message.startswith("p.yaml: ")
    return message


RULE = "rules:\n  - name: product\n    match: '/p/(?P<sku>\\w+)'\n    event: product_view\n"


def test_a_minimal_file_works() -> None:
    patterns = parse_patterns(RULE + "    item_id: '{sku}'\n")
    found = patterns.first_match("GET", "/p/abc", "/p/abc")
    assert found is not None and found[0].render(found[1]) == {"item_id": "abc"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("", "expected a mapping"),
        ("version: 2\n", "version"),
        ("rulez: []\n", "rulez: unknown key"),
        (RULE + "    item_id: '{sku}'\n    colour: red\n", "rules[0].colour (rule 'product'): unknown key"),
        (RULE.replace("product_view", "teleport") + "    item_id: '{sku}'\n", "rules[0].event (rule 'product')"),
        (
            RULE.replace("(?P<sku>\\w+)", "(?P<sku>\\w+") + "    item_id: '{sku}'\n",
            "rules[0] (product): match: invalid regular expression",
        ),
        (RULE + "    item_id: '{slug}'\n", "uses {slug}, which is not a named group of match (named groups: sku)"),
        (RULE, "rules[0] (product): a product_view rule needs item_id"),
        (RULE + "    item_id: '{sku}'\n    order_id: '{sku}'\n", "order_id does not apply to a product_view rule"),
        (RULE + "    item_id: '{sku!r}'\n", "may only use plain {group} placeholders"),
        (RULE + "    item_id: '{sku'\n", "bad template"),
        (RULE + "    item_id: '{sku}'\n    currency: EUR\n", "currency applies to purchase rules only"),
        (RULE.replace("product_view", "purchase") + "    item_id: '{sku}'\n    order_id: '{sku}'\n", "needs currency"),
        (RULE + "    item_id: '{sku}'\n" + RULE.split("\n", 1)[1] + "    item_id: '{sku}'\n", "repeated: product"),
        (RULE + "    item_id: '{sku}'\n    on: url\n", "keys must be text"),
        ("assets:\n  patterns: ['(']\n", "assets.patterns[0]: invalid regular expression"),
        ("bots:\n  patterns: ['[a-']\n", "bots.patterns[0]: invalid regular expression"),
        ("rules:\n  - match: '/x'\n    event: page_view\n", "rules[0].name: Field required"),
    ],
)
def test_errors_are_clear(text: str, expected: str) -> None:
    assert expected in _error(text)


def test_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PatternError, match="cannot read the patterns file"):
        load_patterns(tmp_path / "nope.yaml")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00rules")
    with pytest.raises(PatternError, match="not UTF-8"):
        load_patterns(binary)
