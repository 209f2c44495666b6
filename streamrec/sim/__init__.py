"""Simulated users who see the published lists and click: the closed-loop simulator and the demo.

- `options`: what a run is told (`SimulationOptions`, the simulator's model defaults).
- `users`: the simulated users, their hidden tastes and the CTR tallies against the references.
- `loops`: the transports, in-process (`Pipeline`) and Kafka (events out, lists back).
- `service_process`: the streamrec consumer service run as a child process.
- `run`: the closed loop itself, the Kafka setup around it, and policy comparisons.
- `report`: the JSON report, the live progress line and the tables.
- `cli`: `streamrec simulate` (flags to settings and options).
- `demo`: `streamrec demo`, the whole deployed path on one machine in about a minute.
"""
