"""Everything about a job's life: its model, admission and live runs, finishing and records.

:mod:`pnsd.jobs.model` is the job itself (a pure state machine); the scheduler admits and runs
jobs, and is the one owner of the jobs in motion; finishing records their outcomes; the store
(with its SQL, database thread, blob files and retention bound) keeps them.
"""
