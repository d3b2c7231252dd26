"""I/O that the locker (`daemon`), the console (`fleet_console`) and the broker tool share.

One copy of what would otherwise drift between the programs: the MQTT client set-up
(`mqtt_client`), the SMS and e-mail senders with one set of retry rules (`delivery`,
`sms_gateway`, `smtp_email`) and the quiet end on a closed pipe (`closed_pipe`). Unlike
`contract`, this package does I/O; it imports nothing of the project but `contract`.
"""
