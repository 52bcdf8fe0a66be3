"""Run inside LLaMA-Factory's own virtualenv: print, as JSON, the trained text of each SFT example it builds.

    python llamafactory_labels.py MODEL_DIR DATASET_DIR TEMPLATE DATASET[,DATASET...]

Each example becomes the list of its trained runs (labels != -100), decoded. It uses LLaMA-Factory's own
argument parsing, template and dataset pipeline, nothing of lorakit.
"""

import json
import sys
import tempfile


def main() -> None:
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    model, dataset_dir, template, datasets = sys.argv[1:5]
    with tempfile.TemporaryDirectory() as out:
        model_args, data_args, training_args, _, _ = get_train_args({
            "model_name_or_path": model, "stage": "sft", "do_train": True, "finetuning_type": "lora",
            "dataset": datasets, "dataset_dir": dataset_dir, "template": template, "cutoff_len": 100_000,
            "output_dir": out, "overwrite_cache": True, "preprocessing_num_workers": 1, "report_to": "none"})
        tokenizer_module = load_tokenizer(model_args)
        tokenizer = tokenizer_module["tokenizer"]
        chat = get_template_and_fix_tokenizer(tokenizer, data_args)
        module = get_dataset(chat, model_args, data_args, training_args, "sft", **tokenizer_module)
    examples = []
    for row in module["train_dataset"]:
        runs, run = [], []
        for token, label in zip(row["input_ids"], row["labels"], strict=True):
            if label == -100 and run:
                runs.append(tokenizer.decode(run))
                run = []
            elif label != -100:
                run.append(token)
        examples.append(runs + ([tokenizer.decode(run)] if run else []))
    print("LABELS " + json.dumps(examples))  # LLaMA-Factory prints to stdout too: this line is the answer


if __name__ == "__main__":
    main()
