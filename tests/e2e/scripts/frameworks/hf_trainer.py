"""transformers.Trainer on a tiny, config-built BERT (no hub access) and random token ids.

The Trainer builds its own DataLoaders (get_train_dataloader / get_eval_dataloader) from the
datasets and TrainingArguments, and passes them through accelerate's prepare().
"""
import tempfile

import torch
from torch.utils.data import Dataset
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainingArguments,
)


class RandomTokens(Dataset):
    def __init__(self, n, seq_len=32, vocab_size=1000, num_labels=2, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(5, vocab_size, (n, seq_len), generator=g)
        self.labels = torch.randint(0, num_labels, (n,), generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        ids = self.input_ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": self.labels[i]}


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    return {"accuracy": float((logits.argmax(-1) == labels).mean())}


if __name__ == "__main__":
    config = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    model = BertForSequenceClassification(config)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            max_steps=120,
            per_device_train_batch_size=8,
            per_device_eval_batch_size=16,
            learning_rate=5e-4,
            dataloader_num_workers=2,
            eval_strategy="steps",
            eval_steps=60,
            save_strategy="no",
            logging_steps=1000,
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=RandomTokens(640),
                          eval_dataset=RandomTokens(64, seed=1), compute_metrics=compute_metrics)
        result = trainer.train()
        metrics = trainer.evaluate()
        print(f"hf_trainer done: steps={result.global_step} eval_loss={metrics['eval_loss']:.3f}")
