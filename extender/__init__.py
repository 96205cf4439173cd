"""qosched.extender"""
