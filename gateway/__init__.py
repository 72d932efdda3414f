"""Edge gateway: Modbus polling, edge detection, MQTT publishing, store-and-forward."""
