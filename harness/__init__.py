"""Process helpers shared by bench/, faults/ and the integration tests (see ``procs``)."""
