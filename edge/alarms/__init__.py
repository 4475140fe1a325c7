"""The alarm rule: from a stream of hop scores to one raise and one clear per episode."""

from edge.alarms.rule import AlarmRule, AlarmRuleConfig, StreamKey, Transition

__all__ = ["AlarmRule", "AlarmRuleConfig", "StreamKey", "Transition"]
