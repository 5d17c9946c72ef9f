"""Run machinery: live jobs and the run history."""
