// The gallery of the user's recent jobs, kept up to date from the event stream, and the cache
// of their images (fetched with the bearer token, shown through object URLs).
import { describe, title } from "./format.js";

export class Images {
  constructor(api) {
    this.api = api;
    this.urls = new Map();  // job_id -> Promise of an object URL
  }

  url(job) {
    if (!this.urls.has(job.job_id)) {
      const url = this.api.image(job.job_id).then((blob) => URL.createObjectURL(blob));
      url.catch(() => this.urls.delete(job.job_id));  // try again next time
      this.urls.set(job.job_id, url);
    }
    return this.urls.get(job.job_id);
  }

  clear() {
    for (const url of this.urls.values()) url.then(URL.revokeObjectURL, () => {});
    this.urls.clear();
  }
}

export class Gallery {
  constructor(list, images, onOpen, size) {
    Object.assign(this, { list, images, onOpen, size });
    this.jobs = [];  // newest first
    this.active = null;
  }

  set(jobs) {
    this.jobs = jobs.slice(0, this.size);
    this.list.replaceChildren(...this.jobs.map((job) => this.item(job)));
  }

  find(jobId) {
    return this.jobs.find((j) => j.job_id === jobId);
  }

  // A job's newer document: its item is redrawn, or added first if the job is new.
  update(job) {
    const at = this.jobs.findIndex((j) => j.job_id === job.job_id);
    if (at < 0) {
      this.jobs.unshift(job);
      this.list.prepend(this.item(job));
      if (this.jobs.length > this.size) {
        this.jobs.pop();
        this.list.lastElementChild.remove();
      }
    } else {
      this.jobs[at] = job;
      this.list.children[at].replaceWith(this.item(job));
    }
  }

  remove(jobId) {
    const at = this.jobs.findIndex((j) => j.job_id === jobId);
    if (at >= 0) {
      this.jobs.splice(at, 1);
      this.list.children[at].remove();
    }
  }

  markActive(jobId) {
    this.active = jobId;
    for (const button of this.list.querySelectorAll(".thumb")) {
      button.classList.toggle("active", button.dataset.jobId === jobId);
    }
  }

  item(job) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "thumb";
    button.classList.toggle("active", job.job_id === this.active);
    button.dataset.jobId = job.job_id;
    button.dataset.status = job.status;
    button.title = `${title(job.params)}: ${job.status}`;
    const done = job.status === "succeeded";
    const picture = document.createElement(done ? (job.animation ? "video" : "img") : "div");
    picture.className = `picture ${job.status}`;
    if (done) {
      if (job.animation) {  // a zoom video plays in place, silently, round and round
        Object.assign(picture, { muted: true, loop: true, autoplay: true, playsInline: true });
      } else {
        picture.alt = button.title;
      }
      this.images.url(job).then((url) => { picture.src = url; }, () => picture.classList.add("missing"));
    } else {
      picture.textContent = describe(job).split(" · ").slice(0, 2).join(" · ");
    }
    const caption = document.createElement("span");
    caption.className = "caption";
    caption.textContent = title(job.params);
    button.append(picture, caption);
    button.addEventListener("click", () => this.onOpen(job.job_id));
    li.append(button);
    return li;
  }
}
