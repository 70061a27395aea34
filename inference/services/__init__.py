"""Benchmark services: launching, running, reporting and recommending (views and tasks stay thin)."""
