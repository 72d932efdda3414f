"""Modbus and MQTT device simulators with physics and fault injection."""
