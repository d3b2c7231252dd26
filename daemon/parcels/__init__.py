"""The parcel-locker business (issue 12): couriers leave parcels, recipients pick them up."""
