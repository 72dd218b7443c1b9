"""The rollout engine: pipelines, the pure decision, the rollback plan and the executor."""
