"""Every string the model and its tokenizer agree on, in one place.

The chat layout is the `qwen_chat` / `internlm2_chat` form that Sa2VA's InternVL2.5-based models use; the image
markers and `[SEG]` are Sa2VA's own, so prompts written here read the same to an imported official checkpoint.
"""

IMAGE_PLACEHOLDER = "<image>"
IMG_START = "<img>"
IMG_END = "</img>"
IMG_CONTEXT = "<IMG_CONTEXT>"
SEG = "[SEG]"
# Sa2VA adds these with [SEG]; visual prompts are not used here, but keeping the tokens keeps ids aligned.
REGION_TOKENS = ("<p>", "</p>", "<vp>", "</vp>")

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|endoftext|>"

SPECIAL_TOKENS = (PAD, IM_START, IM_END, IMG_START, IMG_END, IMG_CONTEXT, SEG, *REGION_TOKENS)

FORCED_ANSWER = f"It is {SEG}."


def segmentation_prompt(expression: str) -> str:
    """The user turn Sa2VA was trained on for referring segmentation."""
    return f"{IMAGE_PLACEHOLDER}\nPlease segment {expression} in this image."


def user_turn(text: str) -> str:
    """Chat-formats a user message and opens the assistant's reply, which generation continues."""
    return f"{IM_START}user\n{text}{IM_END}\n{IM_START}assistant\n"


def assistant_reply(answer: str) -> str:
    """The supervised part of a conversation: the answer closed by the end-of-turn token generation stops at."""
    return f"{answer}{IM_END}"
