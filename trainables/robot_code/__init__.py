"""Natural-language robot commands -> robot API code: a LoRA fine-tune of a causal code LM
("Robot-LoRA"). `trainable.train` runs one trial, `task.TASK` is the tuner's view of it,
`python -m trainables.robot_code` trains one configuration, and
`python -m trainables.robot_code.demo_data` writes demo records."""
