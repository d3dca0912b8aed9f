"""Training files and hyperparameters: every problem is a 400 that says where it is."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from model_engine_server.domain.exceptions import InvalidRequestError
from model_engine_server.domain.fine_tuning import (
    Hyperparameters,
    TrainingExample,
    check_lengths,
    check_suffix,
    fine_tuned_model_name,
    parse_training_csv,
)


def test_prompt_response_and_input_output_columns_are_read_in_order() -> None:
    examples = parse_training_csv('prompt,response\nHi,"Hello, you"\n\nBye,See you\n')
    assert [(e.prompt, e.response, e.row) for e in examples] == [("Hi", "Hello, you", 2), ("Bye", "See you", 4)]
    other = parse_training_csv("id,input,output\n7,question,answer\n")
    assert [(e.prompt, e.response) for e in other] == [("question", "answer")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("prompt,response\n", "no examples"),
        ("question,answer\nq,a\n", "must have the columns prompt,response"),
        ("prompt,response\nq,a\n ,a\n", "row 3 has an empty prompt"),
        ("prompt,response\nq,a\nq2,a2\nq3,\n", "row 4 has an empty response"),
        ("prompt,response\nq\n", "row 2 has 1 columns"),
    ],
)
def test_bad_training_files_name_the_problem_and_row(text: str, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        parse_training_csv(text)


def test_a_row_that_cannot_fit_is_named_before_anything_starts() -> None:
    fits = TrainingExample("a b c", "d e", row=2)
    too_long = TrainingExample("word " * 300, "answer " * 250, row=3)
    check_lengths([fits], max_length=5, context_length=2048, model="smollm2-135m")
    with pytest.raises(InvalidRequestError, match=r"training_file row 3 .* at least 550 tokens .* max_length is 512"):
        check_lengths([fits, too_long], max_length=512, context_length=2048, model="smollm2-135m")
    with pytest.raises(InvalidRequestError, match=r"max_length \(4096\) exceeds the context length of smollm2-135m"):
        check_lengths([fits], max_length=4096, context_length=2048, model="smollm2-135m")


def test_hyperparameters_accept_numbers_and_numeric_strings() -> None:
    params = Hyperparameters.parse({"lr": "0.0005", "epochs": 2.0, "batch_size": "8", "lora_r": 4})
    assert (params.lr, params.epochs, params.batch_size, params.lora_r) == (0.0005, 2, 8, 4)
    assert Hyperparameters.parse(None) == Hyperparameters()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"learning_rate": 1e-4, "epochs": 1, "warmup": 3}, "Unknown hyperparameters: learning_rate, warmup"),
        ({"epochs": 0}, "epochs must be between 1 and 100"),
        ({"epochs": 1.5}, "epochs must be a whole number"),
        ({"lr": "fast"}, "lr must be a number"),
        ({"lora_dropout": 1}, r"lora_dropout must be in \[0, 1\)"),
        ({"batch_size": True}, "batch_size must be a number"),
    ],
)
def test_bad_hyperparameters_are_named(raw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        Hyperparameters.parse(raw)


def test_suffix_rules_and_model_names_are_label_safe() -> None:
    check_suffix("support-bot")
    for bad in ("x" * 29, "Has Caps", "-dash", "under_score"):
        with pytest.raises(InvalidRequestError, match="suffix"):
            check_suffix(bad)
    at = datetime(2026, 11, 29, 22, 30, 5, tzinfo=UTC)
    assert fine_tuned_model_name("smollm2-135m", "support-bot", at) == "smollm2-135m.support-bot.261129-223005"
    long_name = fine_tuned_model_name("A" * 80, "x" * 28, at)
    assert len(long_name) <= 63 and long_name.endswith(".261129-223005")
