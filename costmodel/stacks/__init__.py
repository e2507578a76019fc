"""Software stacks (Megatron/NeMo, torchtitan, DeepSpeed, plain FSDP): what each runs, overlaps
and keeps in memory (the cost model's stack profiles, ``costmodel/data/stacks/``), and which
plans each can launch (the rules the search and the emitters share)."""
