"""Label Studio labelling configs: load, check against the pipeline's classes, and build results.

A config is the XML a Label Studio project shows annotators. sluice supports single-label
classification: exactly one `<Choices>` (or `<Labels>`) control pointing at one object tag
(`<Text>`, `<Image>`, ...), whose values must equal the pipeline's classes. A mismatch would
otherwise surface much later as labels the clean stage cannot map.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

# Control tags whose child values are the label set; each maps to the tag of its options.
_CONTROL_OPTION_TAGS = {"Choices": "Choice", "Labels": "Label"}
# The `type` a result of each control carries in Label Studio's JSON.
_RESULT_TYPES = {"Choices": "choices", "Labels": "labels"}


class LabelConfigError(ValueError):
    """A labelling config that Label Studio or the pipeline cannot use."""


@dataclass(frozen=True)
class LabelConfig:
    """A checked labelling config and the names a Label Studio result needs."""

    path: Path
    xml: str
    control_name: str  # the result's `from_name`
    control_type: str  # "Choices" or "Labels"
    to_name: str  # the object tag the control labels
    object_type: str  # "Text", "Image", ...
    data_key: str  # task data field the object shows (`value="$text"` -> "text")
    classes: tuple[str, ...]

    @property
    def result_type(self) -> str:
        return _RESULT_TYPES[self.control_type]

    def build_result(self, label: str) -> list[dict[str, Any]]:
        """The Label Studio `result` list that says "this item is `label`"."""
        return build_choice_result(
            label, from_name=self.control_name, to_name=self.to_name, result_type=self.result_type
        )


def load_label_config(path: str | Path, classes: Sequence[str]) -> LabelConfig:
    """Read a labelling config and check it against the pipeline's classes.

    Raises:
        LabelConfigError: the file is missing or not XML (with the line), has no usable
            control, or its choices differ from `classes` (missing/extra listed).
    """
    path = Path(path)
    if not path.is_file():
        raise LabelConfigError(
            f"label config {path} does not exist; point `label_config` in the annotate config at an "
            "XML file such as label_config/text_classification.xml"
        )
    return parse_label_config(path.read_text(encoding="utf-8"), classes, source=path)


def parse_label_config(xml: str, classes: Sequence[str], *, source: str | Path = "<string>") -> LabelConfig:
    """Check a labelling config given as text; `source` names it in errors."""
    root = _parse_xml(xml, source)
    if root.tag != "View":
        raise LabelConfigError(
            f"label config {source}: the root tag is <{root.tag}>, Label Studio expects <View>; "
            "wrap the tags in <View>...</View>"
        )
    control = _single_control(root, source)
    control_name = control.get("name") or ""
    to_name = control.get("toName") or ""
    if not control_name or not to_name:
        raise LabelConfigError(
            f"label config {source}: <{control.tag}> needs both name= and toName= attributes "
            f'(e.g. <{control.tag} name="label" toName="text">)'
        )
    if control.get("choice", "single") == "multiple":
        raise LabelConfigError(
            f'label config {source}: <{control.tag} name="{control_name}"> allows several choices, '
            'but sluice trains single-label classifiers; set choice="single"'
        )
    objects = _object_tags(root)
    if to_name not in objects:
        known = ", ".join(sorted(objects)) or "none"
        raise LabelConfigError(
            f'label config {source}: <{control.tag} name="{control_name}"> has toName="{to_name}", '
            f"but no object tag has that name (object tags: {known}); make toName match e.g. "
            '<Text name="text" value="$text"/>'
        )
    obj = objects[to_name]
    values = _option_values(control)
    _check_classes(values, classes, source, control)
    return LabelConfig(
        path=Path(source),
        xml=xml,
        control_name=control_name,
        control_type=control.tag,
        to_name=to_name,
        object_type=obj.tag,
        data_key=(obj.get("value") or "").lstrip("$"),
        classes=tuple(classes),
    )


def build_choice_result(
    label: str, *, from_name: str, to_name: str, result_type: str = "choices"
) -> list[dict[str, Any]]:
    """The `result` of one Label Studio annotation or prediction choosing `label`."""
    return [
        {
            "from_name": from_name,
            "to_name": to_name,
            "type": result_type,
            "value": {result_type: [label]},
        }
    ]


REVIEW_HEADER = "Annotators' votes (pick the final label)"


def build_review_config(config: LabelConfig, *, votes_key: str = "votes", header: str = REVIEW_HEADER) -> str:
    """The labelling config of an adjudication project: the original plus the annotators' votes.

    The votes are shown read-only above the choices, from task data field `votes_key`, under `header`
    (a relabel project shows the given label there, not votes).
    """
    root = _parse_xml(config.xml, config.path)
    names = {el.get("name") for el in root.iter() if el.get("name")}
    if votes_key in names:
        raise LabelConfigError(
            f"label config {config.path} already has a tag named {votes_key!r}; pass another votes_key"
        )
    parents = {child: parent for parent in root.iter() for child in parent}
    control = next(el for el in root.iter() if el.get("name") == config.control_name)
    parent = parents[control]
    position = list(parent).index(control)
    votes = ET.Element("Text", {"name": votes_key, "value": f"${votes_key}"})
    parent.insert(position, votes)
    parent.insert(position, ET.Element("Header", {"value": header}))
    return ET.tostring(root, encoding="unicode")


def _parse_xml(xml: str, source: str | Path) -> ET.Element:
    try:
        root: ET.Element = SafeET.fromstring(xml)
    except ET.ParseError as exc:
        line, column = exc.position
        raise LabelConfigError(
            f"label config {source} is not valid XML at line {line}, column {column + 1}: {exc.msg}; "
            "fix the tag there (every tag closed, attributes quoted)"
        ) from None
    except DefusedXmlException as exc:
        raise LabelConfigError(
            f"label config {source} uses a DTD or entities ({type(exc).__name__}), which are refused "
            "for safety; remove the <!DOCTYPE>/<!ENTITY> declarations"
        ) from None
    return root


def _single_control(root: ET.Element, source: str | Path) -> ET.Element:
    controls = [el for el in root.iter() if el.tag in _CONTROL_OPTION_TAGS]
    if not controls:
        raise LabelConfigError(
            f"label config {source} has no <Choices> or <Labels> control; add one, e.g. "
            '<Choices name="label" toName="text"><Choice value="..."/></Choices>'
        )
    if len(controls) > 1:
        names = ", ".join(f'<{c.tag} name="{c.get("name")}">' for c in controls)
        raise LabelConfigError(
            f"label config {source} has {len(controls)} label controls ({names}); sluice trains one "
            "single-label classifier: keep exactly one"
        )
    return controls[0]


def _object_tags(root: ET.Element) -> dict[str, ET.Element]:
    # Object tags are the ones that display task data: their value is a `$field` reference.
    return {
        el.get("name", ""): el
        for el in root.iter()
        if el.get("name") and (el.get("value") or "").startswith("$") and el.tag not in _CONTROL_OPTION_TAGS
    }


def _option_values(control: ET.Element) -> list[str]:
    option_tag = _CONTROL_OPTION_TAGS[control.tag]
    # Label Studio stores the alias in results when one is given, else the value.
    return [opt.get("alias") or opt.get("value") or "" for opt in control.iter(option_tag)]


def _check_classes(values: list[str], classes: Sequence[str], source: str | Path, control: ET.Element) -> None:
    where = f'label config {source}, <{control.tag} name="{control.get("name")}">'
    duplicated = sorted(v for v, n in Counter(values).items() if n > 1)
    if duplicated:
        raise LabelConfigError(f"{where} lists {duplicated} more than once; keep each choice once")
    missing = [c for c in classes if c not in values]
    extra = [v for v in values if v not in set(classes)]
    if missing or extra:
        raise LabelConfigError(
            f"{where} does not match the pipeline's classes {list(classes)}: "
            f"missing {missing}, extra {extra}. Fix: make the choice values in {source} equal the "
            "classes, or change the classes in the annotate config"
        )


def build_label_config(
    classes: Sequence[str], *, object_type: str = "Text", data_key: str = "text", question: str | None = None
) -> str:
    """A single-choice labelling config for `classes` over one object tag, checked like any other config."""
    root = ET.Element("View")
    ET.SubElement(root, "Header", {"value": question or f"Which of {len(classes)} classes is this?"})
    ET.SubElement(root, object_type, {"name": data_key, "value": f"${data_key}"})
    choices = ET.SubElement(
        root,
        "Choices",
        {"name": "label", "toName": data_key, "choice": "single", "showInLine": "true", "required": "true"},
    )
    for value in classes:
        ET.SubElement(choices, "Choice", {"value": value})
    ET.indent(root)
    xml = ET.tostring(root, encoding="unicode") + "\n"
    parse_label_config(xml, classes, source="the drafted label config")
    return xml
