"""The web page's charts: well-formed SVG, titled for a screen reader, bars in proportion, names escaped."""

from xml.etree import ElementTree

from chute.web.charts import Bar, Span, columns, rows, timeline

NS = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ElementTree.Element:
    return ElementTree.fromstring(svg)


def rects(svg: str) -> list[ElementTree.Element]:
    return list(parse(svg).iter(f"{NS}rect"))


def test_a_chart_is_an_image_with_its_title_for_assistive_technology():
    root = parse(columns("Runs per hour", [Bar("10:00", 3), Bar("11:00", 1)]))
    assert root.get("role") == "img" and root.get("aria-label") == "Runs per hour"
    assert root.find(f"{NS}title").text == "Runs per hour"


def test_columns_are_as_tall_as_their_values_and_each_says_its_value():
    bars = rects(columns("Runs per hour", [Bar("10:00", 4), Bar("11:00", 2), Bar("12:00", 0)]))
    heights = [float(r.get("height")) for r in bars]
    assert heights[0] == 2 * heights[1] and heights[2] == 0
    assert [r.find(f"{NS}title").text for r in bars] == ["10:00: 4", "11:00: 2", "12:00: 0"]


def test_rows_are_as_long_as_their_values_and_names_are_escaped():
    svg = rows("Failure rate by module", [Bar("<b>&x", 50, "50 %"), Bar("copy", 25, "25 %")], top=100)
    widths = [float(r.get("width")) for r in rects(svg)]
    assert widths[0] == 2 * widths[1]
    assert "<b>" not in svg and "&lt;b&gt;&amp;x" in svg
    assert [t.text for t in parse(svg).iter(f"{NS}text")] == ["<b>&x", "50 %", "copy", "25 %"]


def test_an_empty_chart_says_so():
    assert "nothing yet" in rows("Time per module", []) and "nothing yet" in columns("Runs per hour", [])


def test_a_timeline_puts_each_entry_where_it_started_and_the_slow_one_widest():
    spans = [Span("probe", 0, 1, "succeeded"), Span("proxy", 1, 6, "succeeded"), Span("sheet", 1, 2, "failed")]
    bars = rects(timeline("Timeline", spans))
    x = [float(r.get("x")) for r in bars]
    w = [float(r.get("width")) for r in bars]
    assert x[0] < x[1] == x[2] and w[1] == max(w) and abs(w[1] - 3 * w[2]) < 0.2
    assert bars[2].get("fill") != bars[1].get("fill")  # a failed entry is not drawn like a succeeded one
    assert bars[1].find(f"{NS}title").text == "proxy: succeeded, from 1.00 s for 6.00 s"
