"""A small byte-level BPE tokenizer for the `tiny` preset, built offline from an in-code corpus.

No tokenizer can be downloaded here, so the tiny model brings its own: byte-level BPE (every string encodes, and
decoding gives back exactly the text, so "It is [SEG]." round-trips) trained on the prompts and answers this
project uses, plus Sa2VA's special tokens as single ids. It is saved with the model like any other tokenizer.
"""

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from vesselseg.model import prompts

VOCAB_SIZE = 512

_EXPRESSIONS = (
    "blood vessels",
    "the blood vessels",
    "the retinal vessels",
    "the retinal blood vessels",
    "all vessels",
    "the vessel tree",
    "arteries and veins",
    "the vasculature",
    "thin vessels",
    "the optic disc",
    "the fovea",
    "the lesions",
)
_ANSWERS = (
    prompts.FORCED_ANSWER,
    "Sure, it is [SEG].",
    "Sure, [SEG].",
    "There is no such object in this image.",
    "The image shows a retinal fundus photograph.",
    "Yes.",
    "No.",
)


def _corpus() -> list[str]:
    lines = []
    for expression in _EXPRESSIONS:
        lines.append(prompts.user_turn(prompts.segmentation_prompt(expression)))
        lines.extend(prompts.assistant_reply(answer) for answer in _ANSWERS)
    # Digits and punctuation so that numbers and free text tokenize into few pieces.
    lines.append(" ".join(str(i) for i in range(100)) + " . , ; : ? ! ( ) - ' \"")
    return lines


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Trains the tiny tokenizer; deterministic, so every build gives the same ids."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(prompts.SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=prompts.IM_END,
        pad_token=prompts.PAD,
        padding_side="right",
        extra_special_tokens=[t for t in prompts.SPECIAL_TOKENS if t not in (prompts.IM_END, prompts.PAD)],
    )
