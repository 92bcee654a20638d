//! Guest images: public sources pinned in `guest-images/images.lock`, a
//! verified content-addressed cache, and the initramfs the lab assembles.
