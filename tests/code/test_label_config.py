"""Labelling configs: the shipped ones load, and every broken one fails naming the file and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from defusedxml import ElementTree as SafeET

from tasks.label_config import (
    LabelConfigError,
    build_choice_result,
    build_review_config,
    load_label_config,
    parse_label_config,
)

REPO = Path(__file__).resolve().parents[2]
DIGITS = [str(d) for d in range(10)]

GOOD = """<View>
  <Text name="text" value="$text"/>
  <Choices name="label" toName="text" choice="single">
    <Choice value="fresh"/>
    <Choice value="rotten"/>
  </Choices>
</View>"""


def _write(tmp_path: Path, xml: str) -> Path:
    path = tmp_path / "config.xml"
    path.write_text(xml)
    return path


@pytest.mark.parametrize(
    ("name", "classes", "object_type", "data_key", "to_name"),
    [
        ("text_classification.xml", ["fresh", "rotten"], "Text", "text", "text"),
        ("image_classification.xml", DIGITS, "Image", "image", "image"),
    ],
)
def test_shipped_configs_load(name: str, classes: list[str], object_type: str, data_key: str, to_name: str) -> None:
    config = load_label_config(REPO / "label_config" / name, classes)
    assert config.classes == tuple(classes)
    assert config.object_type == object_type
    assert config.data_key == data_key
    assert config.to_name == to_name
    assert config.control_name == "label"


def test_classes_in_another_order_still_match(tmp_path: Path) -> None:
    config = load_label_config(_write(tmp_path, GOOD), ["rotten", "fresh"])
    assert config.classes == ("rotten", "fresh")


def test_broken_xml_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace('<Choice value="rotten"/>', '<Choice value="rotten">'))
    with pytest.raises(LabelConfigError) as err:
        load_label_config(path, ["fresh", "rotten"])
    message = str(err.value)
    assert str(path) in message
    assert "line 6" in message  # the unclosed <Choice> is reported where </Choices> breaks it


def test_missing_and_extra_labels_are_listed(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    with pytest.raises(LabelConfigError) as err:
        load_label_config(path, ["fresh", "plot"])
    message = str(err.value)
    assert "missing ['plot']" in message
    assert "extra ['rotten']" in message
    assert str(path) in message
    assert "Fix" in message


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        ("<View><Text name='text' value='$text'/></View>", "no <Choices> or <Labels>"),
        (GOOD.replace('toName="text"', 'toName="body"'), 'toName="body"'),
        (GOOD.replace(' toName="text"', ""), "needs both name= and toName="),
        (GOOD.replace('choice="single"', 'choice="multiple"'), 'choice="single"'),
        (GOOD.replace('<Choice value="rotten"/>', '<Choice value="fresh"/>'), "more than once"),
        (GOOD.replace("View", "Box"), "expects <View>"),
        (
            GOOD.replace("</View>", '<Choices name="extra" toName="text"><Choice value="x"/></Choices></View>'),
            "2 label controls",
        ),
        ('<!DOCTYPE x [<!ENTITY a "b">]><View>&a;</View>', "DTD or entities"),
    ],
)
def test_unusable_configs_fail_clearly(tmp_path: Path, xml: str, expected: str) -> None:
    path = _write(tmp_path, xml)
    with pytest.raises(LabelConfigError) as err:
        load_label_config(path, ["fresh", "rotten"])
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_missing_file_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(LabelConfigError, match="does not exist"):
        load_label_config(tmp_path / "nope.xml", ["a", "b"])


def test_labels_control_and_alias_are_supported() -> None:
    xml = """<View><Text name="t" value="$body"/>
      <Labels name="ner" toName="t"><Label value="Person" alias="PER"/><Label value="Org" alias="ORG"/></Labels>
    </View>"""
    config = parse_label_config(xml, ["PER", "ORG"])
    assert config.result_type == "labels"
    assert config.data_key == "body"


def test_build_result_matches_label_studio_shape() -> None:
    config = parse_label_config(GOOD, ["fresh", "rotten"])
    assert config.build_result("rotten") == [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["rotten"]}}
    ]
    assert build_choice_result("x", from_name="a", to_name="b") == [
        {"from_name": "a", "to_name": "b", "type": "choices", "value": {"choices": ["x"]}}
    ]


def test_review_config_shows_votes_and_keeps_the_choices() -> None:
    config = parse_label_config(GOOD, ["fresh", "rotten"])
    review_xml = build_review_config(config)
    review = parse_label_config(review_xml, ["fresh", "rotten"])  # still a valid single-control config
    assert review.control_name == "label"
    root = SafeET.fromstring(review_xml)
    votes = [el for el in root.iter("Text") if el.get("name") == "votes"]
    assert votes and votes[0].get("value") == "$votes"
    headers = [el.get("value") for el in root.iter("Header")]
    assert "Annotators' votes (pick the final label)" in headers
    with pytest.raises(LabelConfigError, match="already has a tag named 'text'"):
        build_review_config(config, votes_key="text")


def test_relabel_config_has_its_own_header() -> None:
    config = parse_label_config(GOOD, ["fresh", "rotten"])
    xml = build_review_config(config, votes_key="given", header="The label this row arrived with")
    headers = [el.get("value") for el in SafeET.fromstring(xml).iter("Header")]
    assert "The label this row arrived with" in headers
    assert not any("votes" in str(h) for h in headers)
