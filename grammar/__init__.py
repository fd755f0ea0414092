"""The opdsl grammar (opdsl.lark), shipped as package data."""
