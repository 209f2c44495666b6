"""Simulated users who see the published lists and click: the closed-loop simulator and the demo."""
