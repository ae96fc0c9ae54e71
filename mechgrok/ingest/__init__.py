"""Runs trained elsewhere: `mechgrok import` of checkpoint files and the loop Recorder."""
