"""Planners, the MPC loop and policies that act with JEPA world models."""
