"""Execution-based evaluation: benchmark registry and data (`registry`, `datasets`), the sandbox
that is the only code running model output (`sandbox`, `sandbox_server`, `languages`), scoring
(`harness`), pass@k (`metrics`), reports (`report`) and generation for `eval run` (`generate`).
Nothing heavy is imported here: `codegemma --help` stays instant."""
