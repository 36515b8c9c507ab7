"""Training data: repositories -> filtered, deduplicated, FIM'd, tokenised, packed shards.

Entry points: `prepare(PrepareConfig(...))` (codegemma.data.prepare), `ShardReader(dir, split)`
(codegemma.data.shards, what the trainer reads), and the CLI in codegemma.data.commands.
Heavy modules are not imported here, so `import codegemma.data.shards` stays light.
"""
