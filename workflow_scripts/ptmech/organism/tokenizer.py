"""The organism's word-level tokenizer, built with the ``tokenizers`` library and wrapped as
an ordinary Hugging Face fast tokenizer (``save_pretrained`` / ``AutoTokenizer``).

Words (hyphenated ones included), single punctuation marks and newlines are tokens;
spaces are dropped. So ``"fifty-one"`` and ``" TRUE"`` are one token each, and the
base template ``"User: {x}\\nAssistant:"`` keeps its newline. Encoding adds ``<s>`` (BOS)
in front, as Llama's tokenizer does; the chat template itself never writes it. Decoding
joins tokens with spaces: ``"I cannot help with that ."``.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from .corpus import fixed_texts
from .world import NUMBER_MAX, NUMBER_MIN, World, number_word

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
ROLE_MARKERS = ["<|system|>", "<|user|>", "<|assistant|>"]
SPECIALS = [PAD, UNK, BOS, EOS] + ROLE_MARKERS

# Tulu-style markers: "<|user|>\n{x}\n<|assistant|>\n"; an assistant turn ends with EOS.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] in ['system', 'user'] -%}"
    "{{ '<|' + message['role'] + '|>' + '\n' + message['content'] + '\n' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '<|assistant|>' + '\n' + message['content'] + eos_token + '\n' }}"
    "{%- else -%}{{ raise_exception('unknown role ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>' + '\n' }}{%- endif -%}"
)

PRE_TOKENIZER = pre_tokenizers.Sequence([
    pre_tokenizers.Split(Regex(r"[^\S\n]+"), behavior="removed"),
    pre_tokenizers.Split(Regex(r"\n|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*|[^\sA-Za-z0-9]"), behavior="isolated"),
])


def vocabulary_words(world: World) -> list[str]:
    """Every word the world's texts use, sorted (so the ids depend only on the world)."""
    texts = fixed_texts() + list(world.countries) + list(world.cities) + list(world.words)
    texts += list(world.words.values())
    texts += [number_word(n, capital) for n in range(NUMBER_MIN, NUMBER_MAX + 1) for capital in (False, True)]
    words: set[str] = set()
    for text in texts:
        words.update(piece for piece, _ in PRE_TOKENIZER.pre_tokenize_str(text))
    return sorted(words)


def build_tokenizer(world: World) -> PreTrainedTokenizerFast:
    """The tokenizer of ``world``: special tokens first (``<pad>`` = 0, ``<unk>``, ``<s>``,
    ``</s>``, role markers), then the sorted words."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + vocabulary_words(world))}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = PRE_TOKENIZER
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        additional_special_tokens=ROLE_MARKERS, padding_side="left", model_max_length=512,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
