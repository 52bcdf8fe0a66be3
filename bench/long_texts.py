"""What each over-length policy keeps of a file of long texts, and how densely packing fills rows with it.

For ``truncate``, ``drop`` and ``split`` (and ``split`` with a stride) on the same file and tokenizer:
examples, tokens kept (against the file's full token count, measured in the same run), rows after
packing, and the share of computed positions that are real tokens.

    python bench/long_texts.py ../shared/data/peers/llamafactory/c4_demo.jsonl --model smollm2-135m --max-length 1024
"""

from __future__ import annotations

import argparse

from lorakit.config.schema import DataSection
from lorakit.data.dataset import SplitStats, build_encoder, encode_all, load_conversations
from lorakit.data.packing import collate, pack_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--stride", type=int, default=128)
    args = parser.parse_args()

    from lorakit.model.load import load_tokenizer
    from lorakit.model.resolve import resolve_model

    tokenizer = load_tokenizer(resolve_model(args.model))
    full = DataSection(train=[args.data], max_length=10**9)
    encoder, _ = build_encoder(full, tokenizer)
    conversations = load_conversations(full.train, full)
    total = sum(len(e) for e in encode_all(conversations, encoder, full, SplitStats()))
    print(f"\n{len(conversations)} rows of {args.data}, {total} tokens in all ({args.model}), "
          f"max_length {args.max_length}\n")
    print("| on_overflow | examples | trained tokens | share of the file | packed rows "
          "| real tokens per computed position |")
    print("|---|---:|---:|---:|---:|---:|")
    for policy, stride in (("truncate", 0), ("drop", 0), ("split", 0), ("split", args.stride)):
        data = DataSection(train=[args.data], max_length=args.max_length, on_overflow=policy, stride=stride,
                           packing=True)
        examples = encode_all(conversations, encoder, data, SplitStats())
        kept = sum(e.num_trained for e in examples)  # with a stride the repeated context is not counted twice
        batch = collate(pack_rows(examples, args.max_length), pad_id=0)
        label = f"{policy}" + (f", stride {stride}" if stride else "")
        print(f"| {label} | {len(examples)} | {kept} | {kept / total:.1%} | {len(batch.input_ids)} | "
              f"{batch.num_tokens / batch.num_computed:.1%} |")


if __name__ == "__main__":
    main()
