// ktctl TUN addon: opens /dev/net/tun (IFF_TUN | IFF_NO_PI, optionally IFF_VNET_HDR with
// TSO/checksum offloads), reads it without blocking under a uv_poll watcher and hands every
// readable event's packets to JavaScript in one call.
//
// JS surface (see src/tun/device.ts for the typed face):
//   open(name, { vnetHdr, offload, mtu? }) -> Tun
//   Tun.name, Tun.fd, Tun.vnetHdr, Tun.offload, Tun.offloadFlags, Tun.mtu
//   Tun.start(onBatch(arena, meta, count), onError(err))   start polling
//   Tun.stop()                                             stop polling (fd stays open)
//   Tun.write(buf) -> bytes | 0 on EAGAIN
//   Tun.writeBatch(bufs[]) -> packets written (stops at the first EAGAIN)
//   Tun.writev(head, payload) -> bytes | 0 on EAGAIN   one packet from two pieces (writev(2))
//   Tun.ref() / Tun.unref()                                keep / do not keep the loop alive
//   Tun.close()                                            idempotent
//
// Batches: `arena` is ONE Buffer reused for every batch and `meta` ONE Uint32Array reused too:
// packet i lies at arena[meta[2i] .. meta[2i] + meta[2i+1]). Both are overwritten by the next
// batch, so the callback must consume or copy what it keeps before it returns.

#include <napi.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

namespace {

// struct virtio_net_hdr (no num_buffers): flags, gso_type, hdr_len, gso_size, csum_start, csum_offset.
constexpr int kVnetHdrLen = 10;
// Largest packet the kernel hands us: a 64 KiB GSO super-segment plus the virtio header.
constexpr size_t kMaxPacket = 65536 + kVnetHdrLen + 64;
// Per readable event: at most this many packets / this many bytes (plus one last packet).
constexpr uint32_t kMaxBatch = 64;
constexpr size_t kBatchBytes = 1 << 20;
constexpr size_t kArenaSize = kBatchBytes + kMaxPacket;

Napi::Error ErrnoError(Napi::Env env, int err, const std::string& syscall, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  const char* code = nullptr;
  switch (err) {
    case EPERM: code = "EPERM"; break;
    case EACCES: code = "EACCES"; break;
    case ENOENT: code = "ENOENT"; break;
    case ENODEV: code = "ENODEV"; break;
    case EBUSY: code = "EBUSY"; break;
    case EINVAL: code = "EINVAL"; break;
    case EEXIST: code = "EEXIST"; break;
    case EAGAIN: code = "EAGAIN"; break;
    case EBADF: code = "EBADF"; break;
    case EIO: code = "EIO"; break;
    case EMSGSIZE: code = "EMSGSIZE"; break;
    case EFAULT: code = "EFAULT"; break;
    case ENOMEM: code = "ENOMEM"; break;
    case ENOBUFS: code = "ENOBUFS"; break;
    case EMFILE: code = "EMFILE"; break;
    case ENFILE: code = "ENFILE"; break;
    default: code = "EUNKNOWN"; break;
  }
  e.Set("code", Napi::String::New(env, code));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

std::string OpenMessage(int err, const std::string& name, const std::string& step) {
  std::string what = "cannot open TUN device " + (name.empty() ? std::string("(any name)") : name) + ": ";
  switch (err) {
    case EPERM:
    case EACCES:
      return what + "permission denied (" + step + "); creating a TUN device needs root or CAP_NET_ADMIN";
    case ENOENT:
    case ENODEV:
    case ENXIO:
      return what + "/dev/net/tun does not exist; load the tun kernel module (modprobe tun) or run where TUN devices are available";
    case EBUSY:
      return what + "the interface name is already in use by another process";
    default: {
      std::string s = what + step + " failed: " + strerror(err);
      return s;
    }
  }
}

void OnPollClosed(uv_handle_t* handle) { delete reinterpret_cast<uv_poll_t*>(handle); }

class Tun : public Napi::ObjectWrap<Tun> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Tun",
                       {
                           InstanceMethod<&Tun::Start>("start"),
                           InstanceMethod<&Tun::Stop>("stop"),
                           InstanceMethod<&Tun::Write>("write"),
                           InstanceMethod<&Tun::WriteBatch>("writeBatch"),
                           InstanceMethod<&Tun::Writev>("writev"),
                           InstanceMethod<&Tun::DoRef>("ref"),
                           InstanceMethod<&Tun::DoUnref>("unref"),
                           InstanceMethod<&Tun::Close>("close"),
                           InstanceAccessor<&Tun::GetName>("name"),
                           InstanceAccessor<&Tun::GetFd>("fd"),
                           InstanceAccessor<&Tun::GetVnetHdr>("vnetHdr"),
                           InstanceAccessor<&Tun::GetOffload>("offload"),
                           InstanceAccessor<&Tun::GetOffloadFlags>("offloadFlags"),
                           InstanceAccessor<&Tun::GetMtu>("mtu"),
                           InstanceAccessor<&Tun::GetClosed>("closed"),
                       });
  }

  // new Tun(name, vnetHdr, offload, mtu): only called from open() below.
  explicit Tun(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Tun>(info) {
    Napi::Env env = info.Env();
    std::string name = info[0].As<Napi::String>().Utf8Value();
    vnet_hdr_ = info[1].As<Napi::Boolean>().Value();
    bool want_offload = info[2].As<Napi::Boolean>().Value();
    int mtu = info[3].As<Napi::Number>().Int32Value();

    if (name.size() >= IFNAMSIZ) {
      Napi::TypeError::New(env, "TUN interface name \"" + name + "\" is too long (at most 15 characters)")
          .ThrowAsJavaScriptException();
      return;
    }
    if (want_offload && !vnet_hdr_) {
      Napi::TypeError::New(env, "offloads need the virtio_net_hdr (vnetHdr: true)").ThrowAsJavaScriptException();
      return;
    }

    fd_ = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd_ < 0) {
      int err = errno;
      ErrnoError(env, err, "open", OpenMessage(err, name, "open /dev/net/tun")).ThrowAsJavaScriptException();
      return;
    }

    struct ifreq ifr;
    std::memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (vnet_hdr_ ? IFF_VNET_HDR : 0);
    std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
    if (ioctl(fd_, TUNSETIFF, &ifr) < 0) {
      int err = errno;
      std::string msg;
      if (err == EINVAL && !name.empty())
        msg = "cannot open TUN device " + name +
              ": the name is taken by an interface that is not a TUN device, or is not a valid interface name";
      else
        msg = OpenMessage(err, name, "TUNSETIFF");
      CloseFd();
      ErrnoError(env, err, "ioctl(TUNSETIFF)", msg).ThrowAsJavaScriptException();
      return;
    }
    name_.assign(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ));

    if (vnet_hdr_) {
      int sz = kVnetHdrLen;
      if (ioctl(fd_, TUNSETVNETHDRSZ, &sz) < 0) {
        int err = errno;
        CloseFd();
        ErrnoError(env, err, "ioctl(TUNSETVNETHDRSZ)", OpenMessage(err, name_, "TUNSETVNETHDRSZ"))
            .ThrowAsJavaScriptException();
        return;
      }
    }

    // Offloads: ask for checksum + TSO4 + TSO6; if the kernel refuses, fall back to none (the
    // JS side sees offload=false and then gets only MTU-sized packets with full checksums).
    offload_flags_ = 0;
    if (want_offload) {
      unsigned int flags = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
      if (ioctl(fd_, TUNSETOFFLOAD, flags) == 0) {
        offload_flags_ = flags;
      } else if (ioctl(fd_, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4) == 0) {
        offload_flags_ = TUN_F_CSUM | TUN_F_TSO4;
      } else {
        offload_error_ = errno;
        ioctl(fd_, TUNSETOFFLOAD, 0u);
      }
    } else if (vnet_hdr_) {
      ioctl(fd_, TUNSETOFFLOAD, 0u);
    }

    if (mtu > 0) {
      int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      int err = 0;
      if (s < 0) {
        err = errno;
      } else {
        struct ifreq mr;
        std::memset(&mr, 0, sizeof mr);
        std::strncpy(mr.ifr_name, name_.c_str(), IFNAMSIZ - 1);
        mr.ifr_mtu = mtu;
        if (ioctl(s, SIOCSIFMTU, &mr) < 0) err = errno;
        ::close(s);
      }
      if (err != 0) {
        CloseFd();
        ErrnoError(env, err, "ioctl(SIOCSIFMTU)",
                   "cannot set the MTU of " + name_ + " to " + std::to_string(mtu) + ": " + strerror(err))
            .ThrowAsJavaScriptException();
        return;
      }
    }
    mtu_ = mtu;

    // The read arena and the batch index live in JS memory, allocated once per device.
    Napi::Buffer<uint8_t> arena = Napi::Buffer<uint8_t>::New(env, kArenaSize);
    arena_data_ = arena.Data();
    arena_ = Napi::Persistent(arena.As<Napi::Object>());
    Napi::Uint32Array meta = Napi::Uint32Array::New(env, kMaxBatch * 2);
    meta_data_ = meta.Data();
    meta_ = Napi::Persistent(meta.As<Napi::Object>());
  }

  ~Tun() override {
    // GC of the wrapper or environment teardown: release everything without calling into JS.
    StopPoll(true);
    CloseFd();
    delete async_context_;
    async_context_ = nullptr;
  }

 private:
  void CloseFd() {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

  // Stops and (if `release`) closes the uv_poll handle; drops the self-reference taken by start().
  void StopPoll(bool release) {
    if (poll_ != nullptr) {
      uv_poll_stop(poll_);
      if (release) {
        poll_->data = nullptr;
        uv_close(reinterpret_cast<uv_handle_t*>(poll_), OnPollClosed);
        poll_ = nullptr;
      }
    }
    polling_ = false;
    if (self_ref_) {
      self_ref_ = false;
      if (!finalizing_) Unref();
    }
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (fd_ < 0) throw Napi::Error::New(env, "the TUN device is closed");
    if (!info[0].IsFunction() || !info[1].IsFunction())
      throw Napi::TypeError::New(env, "start(onBatch, onError) needs two functions");
    on_batch_ = Napi::Persistent(info[0].As<Napi::Function>());
    on_error_ = Napi::Persistent(info[1].As<Napi::Function>());
    if (!async_context_) async_context_ = new Napi::AsyncContext(env, "ktctl:tun");
    if (poll_ == nullptr) {
      poll_ = new uv_poll_t;
      uv_loop_t* loop = nullptr;
      napi_get_uv_event_loop(env, &loop);
      int r = uv_poll_init(loop, poll_, fd_);
      if (r != 0) {
        delete poll_;
        poll_ = nullptr;
        throw Napi::Error::New(env, std::string("uv_poll_init failed: ") + uv_strerror(r));
      }
      if (!loop_ref_) uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
    }
    poll_->data = this;
    int r = uv_poll_start(poll_, UV_READABLE, OnReadable);
    if (r != 0) throw Napi::Error::New(env, std::string("uv_poll_start failed: ") + uv_strerror(r));
    polling_ = true;
    if (!self_ref_) {
      // Keep the wrapper alive while the loop may call back into it.
      Ref();
      self_ref_ = true;
    }
    return env.Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    StopPoll(false);
    return info.Env().Undefined();
  }

  static void OnReadable(uv_poll_t* handle, int status, int events) {
    (void)events;
    Tun* self = static_cast<Tun*>(handle->data);
    if (self == nullptr || !self->polling_) return;
    self->HandleReadable(status);
  }

  void HandleReadable(int status) {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (status < 0) {
      Napi::Error err = Napi::Error::New(env, std::string("polling the TUN device failed: ") + uv_strerror(status));
      StopPoll(false);
      CallJs(on_error_, {err.Value()});
      return;
    }
    uint32_t count = 0;
    size_t used = 0;
    int read_error = 0;
    while (count < kMaxBatch && used < kBatchBytes && fd_ >= 0) {
      ssize_t n = ::read(fd_, arena_data_ + used, kMaxPacket);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) read_error = errno;
        break;
      }
      if (n == 0) break;
      meta_data_[count * 2] = static_cast<uint32_t>(used);
      meta_data_[count * 2 + 1] = static_cast<uint32_t>(n);
      count++;
      // Keep each packet 8-byte aligned in the arena.
      used += (static_cast<size_t>(n) + 7) & ~static_cast<size_t>(7);
    }
    if (count > 0) {
      CallJs(on_batch_, {arena_.Value(), meta_.Value(), Napi::Number::New(env, count)});
    }
    if (read_error != 0 && fd_ >= 0 && polling_) {
      Napi::Error err = ErrnoError(env, read_error, "read", std::string("reading the TUN device ") + name_ +
                                                             " failed: " + strerror(read_error));
      StopPoll(false);
      CallJs(on_error_, {err.Value()});
    }
  }

  void CallJs(Napi::FunctionReference& fn, const std::initializer_list<napi_value>& args) {
    if (fn.IsEmpty()) return;
    Napi::Env env = Env();
    try {
      fn.MakeCallback(Value(), args, *async_context_);
    } catch (const Napi::Error& e) {
      // An exception thrown by the JS callback: report it as an uncaught exception, as a
      // JS event emitter would, instead of unwinding into libuv.
      napi_fatal_exception(env, e.Value());
    }
  }

  Napi::Value Write(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (fd_ < 0) throw Napi::Error::New(env, "the TUN device is closed");
    if (!info[0].IsTypedArray()) throw Napi::TypeError::New(env, "write(packet) needs a Buffer or Uint8Array");
    Napi::Uint8Array buf = info[0].As<Napi::Uint8Array>();
    for (;;) {
      ssize_t n = ::write(fd_, buf.Data(), buf.ByteLength());
      if (n >= 0) return Napi::Number::New(env, static_cast<double>(n));
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, 0);
      int err = errno;
      throw ErrnoError(env, err, "write", std::string("writing a packet of ") + std::to_string(buf.ByteLength()) +
                                              " bytes to " + name_ + " failed: " + strerror(err));
    }
  }

  // One packet whose headers and payload lie in two buffers: the kernel gathers them (writev),
  // so the payload is not copied into a packet buffer first.
  Napi::Value Writev(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (fd_ < 0) throw Napi::Error::New(env, "the TUN device is closed");
    if (!info[0].IsTypedArray() || !info[1].IsTypedArray()) {
      throw Napi::TypeError::New(env, "writev(head, payload) needs two Buffers or Uint8Arrays");
    }
    Napi::Uint8Array head = info[0].As<Napi::Uint8Array>();
    Napi::Uint8Array payload = info[1].As<Napi::Uint8Array>();
    struct iovec iov[2];
    iov[0].iov_base = head.Data();
    iov[0].iov_len = head.ByteLength();
    iov[1].iov_base = payload.Data();
    iov[1].iov_len = payload.ByteLength();
    for (;;) {
      ssize_t n = ::writev(fd_, iov, 2);
      if (n >= 0) return Napi::Number::New(env, static_cast<double>(n));
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, 0);
      int err = errno;
      throw ErrnoError(env, err, "writev",
                       std::string("writing a packet of ") + std::to_string(head.ByteLength() + payload.ByteLength()) +
                           " bytes to " + name_ + " failed: " + strerror(err));
    }
  }

  Napi::Value WriteBatch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (fd_ < 0) throw Napi::Error::New(env, "the TUN device is closed");
    if (!info[0].IsArray()) throw Napi::TypeError::New(env, "writeBatch(packets) needs an array of Buffers");
    Napi::Array arr = info[0].As<Napi::Array>();
    uint32_t len = arr.Length();
    uint32_t written = 0;
    for (uint32_t i = 0; i < len; i++) {
      Napi::Value v = arr.Get(i);
      if (!v.IsTypedArray()) throw Napi::TypeError::New(env, "writeBatch(packets): element is not a Buffer");
      Napi::Uint8Array buf = v.As<Napi::Uint8Array>();
      ssize_t n;
      do {
        n = ::write(fd_, buf.Data(), buf.ByteLength());
      } while (n < 0 && errno == EINTR);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        int err = errno;
        throw ErrnoError(env, err, "write", std::string("writing packet ") + std::to_string(i) + " to " + name_ +
                                                " failed: " + strerror(err));
      }
      written++;
    }
    return Napi::Number::New(env, written);
  }

  Napi::Value DoRef(const Napi::CallbackInfo& info) {
    loop_ref_ = true;
    if (poll_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(poll_));
    return info.Env().Undefined();
  }

  Napi::Value DoUnref(const Napi::CallbackInfo& info) {
    loop_ref_ = false;
    if (poll_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    StopPoll(true);
    CloseFd();
    on_batch_.Reset();
    on_error_.Reset();
    return info.Env().Undefined();
  }

  void Finalize(Napi::Env env) override {
    (void)env;
    finalizing_ = true;
  }

  Napi::Value GetName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), name_); }
  Napi::Value GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }
  Napi::Value GetVnetHdr(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), vnet_hdr_); }
  Napi::Value GetOffload(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), offload_flags_ != 0);
  }
  Napi::Value GetOffloadFlags(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("csum", Napi::Boolean::New(env, (offload_flags_ & TUN_F_CSUM) != 0));
    o.Set("tso4", Napi::Boolean::New(env, (offload_flags_ & TUN_F_TSO4) != 0));
    o.Set("tso6", Napi::Boolean::New(env, (offload_flags_ & TUN_F_TSO6) != 0));
    if (offload_error_ != 0) o.Set("refused", Napi::String::New(env, strerror(offload_error_)));
    return o;
  }
  Napi::Value GetMtu(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), mtu_); }
  Napi::Value GetClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), fd_ < 0); }

  int fd_ = -1;
  std::string name_;
  bool vnet_hdr_ = false;
  unsigned int offload_flags_ = 0;
  int offload_error_ = 0;
  int mtu_ = 0;
  uv_poll_t* poll_ = nullptr;
  bool polling_ = false;
  bool loop_ref_ = true;
  bool self_ref_ = false;
  bool finalizing_ = false;
  uint8_t* arena_data_ = nullptr;
  uint32_t* meta_data_ = nullptr;
  Napi::ObjectReference arena_;
  Napi::ObjectReference meta_;
  Napi::FunctionReference on_batch_;
  Napi::FunctionReference on_error_;
  Napi::AsyncContext* async_context_ = nullptr;
};

struct AddonData {
  Napi::FunctionReference ctor;
};

Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "open(name, options): name must be a string");
  bool vnet = false, offload = false;
  int mtu = 0;
  if (info[1].IsObject()) {
    Napi::Object o = info[1].As<Napi::Object>();
    vnet = o.Get("vnetHdr").ToBoolean().Value();
    offload = o.Get("offload").ToBoolean().Value();
    Napi::Value m = o.Get("mtu");
    if (m.IsNumber()) mtu = m.As<Napi::Number>().Int32Value();
    if (mtu < 0 || mtu > 65535) throw Napi::RangeError::New(env, "mtu must be between 68 and 65535");
  }
  AddonData* data = env.GetInstanceData<AddonData>();
  return data->ctor.New({info[0], Napi::Boolean::New(env, vnet), Napi::Boolean::New(env, offload),
                         Napi::Number::New(env, mtu)});
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  AddonData* data = new AddonData();
  Napi::Function ctor = Tun::Init(env);
  data->ctor = Napi::Persistent(ctor);
  env.SetInstanceData(data);
  exports.Set("open", Napi::Function::New<Open>(env, "open"));
  exports.Set("Tun", ctor);
  exports.Set("VNET_HDR_LEN", Napi::Number::New(env, kVnetHdrLen));
  exports.Set("MAX_BATCH", Napi::Number::New(env, kMaxBatch));
  exports.Set("ARENA_SIZE", Napi::Number::New(env, static_cast<double>(kArenaSize)));
  return exports;
}

}  // namespace

NODE_API_MODULE(ktctl_tun, Init)
