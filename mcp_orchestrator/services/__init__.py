"""The services the faces call: runs and steps, events and waits, sub-agents, schedules, retention
and traces. Siblings: each changes state through ``transitions`` and the store, none through another."""
