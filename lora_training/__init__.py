"""LCM distillation and fine-tuning: LCM-LoRA (peft), full-model LCD with the w-embedding, and LCF.

Library use::

    from lora_training.config import TrainConfig
    from lora_training.trainer import Trainer

    result = Trainer(TrainConfig(pretrained_model="path/to/sd15", train_data_dir="data/")).train()

CLI: ``lcm-plugin train lora|lcd|lcf ...``, ``lcm-plugin train cache``, ``lcm-plugin train fuse``.
"""
