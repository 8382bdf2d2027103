"""zipml.sim"""
