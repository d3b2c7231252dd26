"""Client access shared by the locker's businesses: phone confirmation codes (`sms_codes`) and
the PIN-guessing defence (`pin_guard`). Pure, time passed in; storage uses them, parcels will."""
