"""The method: policy, takeover monitor, episode runner, data sets, BC / DAgger / DPO, evaluation, CLI."""
