"""Each grader and each operation against scores computed by hand."""

from __future__ import annotations

import pytest

from cluster.graders.grading import Grading, missing_fields
from tests.cluster.graders.helpers import grader, score

ANSWER, REF = "{{sample.output_text}}", "{{item.answer}}"


@pytest.mark.parametrize(
    ("operation", "text", "reference", "expected"),
    [
        ("eq", "Paris", "Paris", 1.0),
        ("eq", "paris", "Paris", 0.0),
        ("ne", "paris", "Paris", 1.0),
        ("ne", "Paris", "Paris", 0.0),
        ("like", "The capital is Paris.", "Paris", 1.0),
        ("like", "The capital is paris.", "Paris", 0.0),
        ("ilike", "The capital is PARIS.", "Paris", 1.0),
        ("ilike", "The capital is Rome.", "Paris", 0.0),
    ],
)
def test_string_check_operations(operation, text, reference, expected):
    g = grader(type="string_check", input=ANSWER, reference=REF, operation=operation)
    assert score(g, text, {"answer": reference}) == expected


@pytest.mark.parametrize(
    ("metric", "text", "reference", "expected"),
    [
        ("fuzzy_match", "abcd", "abce", 0.75),  # 2 x 3 matching characters / 8 characters
        ("fuzzy_match", "abc", "xyz", 0.0),
        ("bleu", "the cat sat on the mat", "the cat sat on the mat", 1.0),
        ("bleu", "a b c d", "w x y z", 0.0),
        ("gleu", "the cat sat on the mat", "the cat sat on the mat", 1.0),
        ("rouge_1", "the cat sat", "the cat ran", 2 / 3),  # 2 shared unigrams of 3 each side
        ("rouge_2", "the cat sat", "the cat ran", 0.5),  # 'the cat' of 2 bigrams each side
        ("rouge_3", "the cat sat", "the cat ran", 0.0),
        ("rouge_4", "a b c d e f", "a b c d e g", 2 / 3),  # abcd, bcde of 3 four-grams each side
        ("rouge_5", "a b c d e f", "a b c d e g", 0.5),  # abcde of 2 five-grams each side
        ("rouge_l", "the black cat sat", "the cat sat down", 0.75),  # LCS 'the cat sat' = 3 of 4 each side
    ],
)
def test_text_similarity_metrics(metric, text, reference, expected):
    g = grader(type="text_similarity", input=ANSWER, reference=REF, evaluation_metric=metric, pass_threshold=0.5)
    assert score(g, text, {"answer": reference}) == pytest.approx(expected)


def test_text_similarity_pass_threshold_decides_pass():
    g = grader(type="text_similarity", input=ANSWER, reference=REF, evaluation_metric="fuzzy_match", pass_threshold=0.7)
    with Grading([g]) as grading:
        assert grading.score("abcd", {"answer": "abce"}, "row 1").passed  # 0.75 >= 0.7
        assert not grading.score("abxy", {"answer": "abce"}, "row 2").passed  # 0.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [("42", 1.0), ("  42 \n", 1.0), ("42 apples", 0.0), ("x42", 0.0)],
)
def test_regex_full_match(text, expected):
    assert score(grader(type="regex", pattern=r"\d+"), text) == expected


def test_regex_dot_matches_newlines_like_format_regex():
    from cluster.evaluation.scoring import compliant
    from cluster.spec import EvaluateSpec

    g = grader(type="regex", pattern="Answer: .+")
    assert score(g, "Answer: one\ntwo") == 1.0
    assert compliant("Answer: one\ntwo", EvaluateSpec(format_regex="Answer: .+"))
    assert not compliant("answer: one", EvaluateSpec(format_regex="Answer: .+"))


SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "string"}, "c": {}},
    "required": ["a", "b", "c"],
}


@pytest.mark.parametrize(
    ("text", "partial", "expected"),
    [
        ('{"a": 1, "b": "x", "c": null}', False, 1.0),
        ('{"a": 1, "b": 2}', False, 0.0),
        ('{"a": 1, "b": 2}', True, 1 / 3),  # a right, b the wrong type, c missing
        ('{"a": 1, "b": "x"}', True, 2 / 3),
        ("not json", True, 0.0),
        ("[1, 2]", True, 0.0),  # not an object: no fields to credit
    ],
)
def test_json_schema_with_and_without_partial_credit(text, partial, expected):
    g = grader(type="json_schema", schema=SCHEMA, partial_credit=partial)
    assert score(g, text) == pytest.approx(expected)


def test_json_schema_field_round_trips_under_its_openai_name():
    g = grader(type="json_schema", schema=SCHEMA)
    dumped = g.model_dump()
    assert dumped["schema"] == SCHEMA and "schema_" not in dumped
    assert grader(**dumped).schema_ == SCHEMA


def test_multi_combines_named_graders_with_the_formula():
    parts = {
        "exact": {"type": "string_check", "name": "exact", "input": ANSWER, "reference": REF, "operation": "eq"},
        "fuzzy": {"type": "text_similarity", "name": "fuzzy", "input": ANSWER, "reference": REF,
                  "evaluation_metric": "fuzzy_match"},
    }  # fmt: skip
    item = {"answer": "abce"}
    assert score(grader(type="multi", graders=parts, calculate_output="0.5 * exact + 0.5 * fuzzy"), "abcd", item) == 0.375
    assert score(grader(type="multi", graders=parts, calculate_output="max(exact, fuzzy) ^ 2"), "abcd", item) == 0.5625
    assert score(grader(type="multi", graders=parts, calculate_output="-exact + sqrt(1)"), "abcd", item) == 1.0


def test_sample_output_json_and_nested_item_fields_render():
    g = grader(type="string_check", input="{{sample.output_json.city}}", reference="{{item.meta.city}}", operation="eq")
    assert score(g, '{"city": "Paris"}', {"meta": {"city": "Paris"}}) == 1.0
    assert g.item_fields() == {"meta"}


def test_weighted_reward_is_the_weighted_mean():
    a = grader(name="a", type="string_check", input=ANSWER, reference=REF, operation="eq")
    b = grader(name="b", type="regex", pattern=r"[A-Z]\w+")
    with Grading([a, b], weights=[3, 1]) as grading:
        got = grading.score("paris", {"answer": "Paris"}, "row 1")  # a: 0, b: 0
        assert got.reward == 0.0 and got.scores == {"a": 0.0, "b": 0.0} and not got.passed
        got = grading.score("Rome", {"answer": "Paris"}, "row 2")  # a: 0, b: 1
        assert got.reward == 0.25 and not got.passed
        got = grading.score("Paris", {"answer": "Paris"}, "row 3")
        assert got.reward == 1.0 and got.passed


def test_a_missing_field_at_grading_time_scores_zero_and_is_named_with_the_row():
    from cluster.graders.grading import GraderFailures

    g = grader(name="exact", type="string_check", input=ANSWER, reference=REF, operation="eq")
    with Grading([g], max_failures=1) as grading:
        assert grading.score("Paris", {}, "train.jsonl:3").reward == 0.0
        assert grading.failures == ["grader 'exact' on train.jsonl:3: '{{item.answer}}' has no value: 'answer' is missing."]
        with pytest.raises(GraderFailures, match=r"(?s)2 grader failures.*train.jsonl:3.*train.jsonl:9"):
            grading.score("Paris", {"other": 1}, "train.jsonl:9")


def test_missing_fields_names_grader_field_and_rows():
    g = grader(name="exact", type="string_check", input=ANSWER, reference=REF, operation="eq")
    rows = [("a.jsonl:1", {"answer": "x"}), ("a.jsonl:2", {}), ("a.jsonl:3", {"ideal": "y"})]
    assert missing_fields([g], rows) == ["grader 'exact' reads {{item.answer}}, which 2 of 3 rows lack: a.jsonl:2, a.jsonl:3"]
