"""Agents: planners (CEM, MPPI, gradient) behind one interface, model-predictive control, and the
policies learned from demonstrations (agents/policies.py registers them)."""

from agents.cem import CEM, CEMConfig
from agents.gradient import GradConfig, GradientPlanner
from agents.mppi import MPPI, MPPIConfig

PLANNERS = {"cem": (CEM, CEMConfig), "mppi": (MPPI, MPPIConfig), "grad": (GradientPlanner, GradConfig)}
