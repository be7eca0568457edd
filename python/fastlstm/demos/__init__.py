"""Runnable demos: python -m fastlstm demo <kind>."""
