"""The API page (book/api.md): it documents what readers take into their own code, and the Sphinx
hook that shows the docstrings' plain-text formulas as written."""
import importlib.util
import re
from pathlib import Path

import kdlib as kd

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("plain_docstrings", ROOT / "_ext" / "plain_docstrings.py")
plain = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plain)


def documented():
    page = (ROOT / "book" / "api.md").read_text()
    return re.findall(r"^\.\. auto(?:function|class):: (\S+)", page, flags=re.M)


def test_the_api_page_documents_the_loss_the_loop_and_the_feature_hooks():
    names = documented()
    for name in ["kdlib.distillation_loss", "kdlib.FitConfig", "kdlib.fit", "kdlib.train_or_load",
                 "kdlib.logit_table", "kdlib.FeatureTerm", "kdlib.features.LayerOutputs",
                 "kdlib.features.attention_map", "kdlib.mix_images"]:
        assert name in names, name
    assert len(names) == len(set(names))


def test_every_documented_name_exists_and_has_a_docstring():
    for name in documented():
        obj = kd
        for part in name.split(".")[1:]:
            obj = getattr(obj, part)
        assert (obj.__doc__ or "").strip(), f"{name} has no docstring"


def test_an_indented_formula_becomes_a_literal_block():
    lines = ["Shifting keeps every exponent <= 0:", "    log q = z - logsumexp(z)", "", "Then more text."]
    plain.literal_blocks(None, "function", "f", None, {}, lines)
    assert lines == ["Shifting keeps every exponent <= 0::", "", "    log q = z - logsumexp(z)", "",
                     "Then more text."]


def test_a_block_after_a_sentence_is_literal_and_ends_with_a_blank_line():
    lines = ["A sum over the classes.", "", "    forward  KL(p || q)", "    reverse  KL(q || p)",
             "back at the margin"]
    plain.literal_blocks(None, "function", "f", None, {}, lines)
    assert lines == ["A sum over the classes. ::", "", "    forward  KL(p || q)", "    reverse  KL(q || p)",
                     "", "back at the margin"]


def test_a_block_ends_only_back_at_its_paragraphs_indentation():
    lines = ["Two tables:", "        a   1", "    b   2", "            c   3", "next paragraph"]
    plain.literal_blocks(None, "function", "f", None, {}, lines)
    assert lines == ["Two tables::", "", "        a   1", "    b   2", "            c   3", "",
                     "next paragraph"]


def test_directives_fields_and_list_items_keep_their_own_markup():
    for head in [".. note:: read this", ":param x: the input", "- an item", "1. a step"]:
        lines = [head, "   more of it"]
        plain.literal_blocks(None, "function", "f", None, {}, lines)
        assert lines == [head, "   more of it"], head
